"""The figures a training run records about its reject path, beside the bundle: the
operating point against two baselines (far), leave-one-series-out (another camera),
leave-one-denomination-out and real notes that are not ours (near)."""

from __future__ import annotations

import logging
import time

import numpy as np
from tqdm import tqdm

from device.openset import OperatingPoint, read_outputs
from host_training.openset import calibrate, nearood
from host_training.train.dataset import Dataset
from host_training.train.samples import FRAME, Pool, series_of
from host_training.train.settings import TrainSettings

log = logging.getLogger(__name__)


def outputs_of(clf, images: np.ndarray, desc: str) -> list[np.ndarray]:
    """Every dequantized output of the int8 model for each image (N x n per output)."""
    rows = []
    for img in tqdm(images, desc=desc, unit="img", leave=False):
        clf.infer(img)
        rows.append(read_outputs(clf.interpreter))
    if not rows:
        n = len(clf.bundle.labels)
        k = len(clf.interpreter.get_output_details())
        return [np.zeros((0, n), np.float32) for _ in range(k)]
    return [np.stack([r[k] for r in rows]) for k in range(len(rows[0]))]


def open_set_figures(point: OperatingPoint, names, val_out, val_y, n_frames: int,
                      neg_out, negative_eval: Pool | None, s: TrainSettings) -> dict:
    """The operating point against two baselines (top-1 >= 0.7; max-softmax calibrated the
    same way) on the validation frames, the validation negatives and the negative set."""
    never = [*point.background_labels, *point.unknown_labels, *point.refused_labels]
    points = {"ours": point,
              "max_softmax": calibrate.calibrate(
                  val_out, val_y, names, point.background_labels, point.unknown_labels,
                  "max_softmax", s.ood_keep, s.max_false_accept, point.refused_labels),
              "top1_0.7": OperatingPoint(background_labels=point.background_labels,
                                         unknown_labels=point.unknown_labels,
                                         refused_labels=point.refused_labels)}
    fig: dict = {"validation": {}, "validation_negatives": {}, "negative_set": {},
                 "ood_kind": (point.ood.kind if point.ood else "none") + (
                     f" + top-1 score keeping {s.score_keep:.2f}" if s.score_keep < 1 else "")}
    frames = [o[:n_frames] for o in val_out]
    negs = [o[n_frames:] for o in val_out]
    for key, pt in points.items():
        v = calibrate.judge_all(pt, names, frames)
        fig["validation"][key] = calibrate.decision_report(v, val_y[:n_frames], names, never)
        if len(negs[0]):
            v = calibrate.judge_all(pt, names, negs)
            fig["validation_negatives"][key] = calibrate.decision_report(
                v, val_y[n_frames:], names, never)
        if neg_out is not None and negative_eval is not None and len(neg_out[0]):
            v = calibrate.judge_all(pt, names, neg_out)
            y = np.full(len(v), calibrate.NOT_A_CLASS)
            rep = calibrate.decision_report(v, y, names, never)
            groups = np.asarray(negative_eval.series)
            acc = np.array([x.accepted for x in v])
            rep["by_group"] = {g: {"n": int((groups == g).sum()),
                                   "false_accept": float(acc[groups == g].mean())}
                               for g in sorted(set(groups))}
            fig["negative_set"][key] = rep
    v = calibrate.judge_all(point, names, val_out)
    fig["validation_all"] = calibrate.decision_report(v, val_y, names, never)
    fig["ood_auroc"] = {}
    for kind in ("max_softmax", "class_mean_cosine")[: len(val_out)]:
        scores = val_out[0][:n_frames]
        correct = scores.argmax(1) == val_y[:n_frames]
        inside = calibrate.ood_values(kind, frames)[correct]
        outside = calibrate.ood_values(kind, neg_out) if neg_out is not None else np.zeros(0)
        fig["ood_auroc"][kind] = calibrate.auroc(inside, outside)
    fig["thresholds"] = {k: p.model_dump(mode="json") for k, p in points.items()}
    return fig


def loso(cache: dict, train_y: np.ndarray, series: list[str], kinds: list[str], val: Dataset,
          names, s: TrainSettings) -> dict:
    """Leave-one-series-out with a linear head on the frozen ImageNet features (the cache of
    the head phase): what another camera would see, without three more fine-tunings."""
    frames = np.asarray([k == FRAME for k in kinds])
    test_feats = np.concatenate([cache["train"][0][frames], cache["val"][: len(val.labels)]])
    test_labels = np.concatenate([train_y[frames], val.labels])
    test_series = [sr for sr, f in zip(series, frames, strict=True) if f] + \
        [series_of(p) for p in val.paths]
    same = np.r_[np.zeros(int(frames.sum()), bool), np.ones(len(val.labels), bool)]
    t0 = time.perf_counter()
    out = calibrate.loso(cache["train"], train_y, series, kinds, test_feats, test_labels,
                         test_series, names, s.seed, same_series=same)
    log.info("leave-one-series-out (head on frozen features) in %.0f s: %s",
             time.perf_counter() - t0, {k: v["accuracy"] for k, v in out.items()})
    return out


def lodo(cache: dict | None, train_y: np.ndarray, val_y: np.ndarray, names,
          point: OperatingPoint, s: TrainSettings) -> dict:
    """Leave-one-denomination-out with a linear head on the frozen ImageNet features (the
    cache of the head phase): how often a note the model was never taught is accepted."""
    if cache is None:
        w = ("the reject path for untaught notes is unmeasured: leave-one-denomination-out "
             "needs the frozen ImageNet features (train with --weights imagenet)")
        log.warning("%s", w)
        return {"folds": {}, "warning": w}
    never = [*point.background_labels, *point.unknown_labels, *point.refused_labels]
    t0 = time.perf_counter()
    out = nearood.lodo(cache["train"], train_y, cache["val"], val_y, names,
                       point.background_labels, never, s.ood_keep, s.max_false_accept, s.seed,
                       score_keep=s.score_keep)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def other_notes_figures(clf, point: OperatingPoint, names, s: TrainSettings) -> dict:
    """The bundle's verdicts on real notes that are not ours: the evaluation part of
    --other's irr/eur and its vnd-phone photos (never trained on)."""
    from host_training.openset import other_notes

    other = other_notes.load_other(s.other, s.input_size, names, parts=(other_notes.EVAL,),
                                   resize_policy=s.resize)
    verdicts = {g: calibrate.judge_all(point, names, outputs_of(clf, other.array(g, s.input_size),
                                                              g))
                for g in other.images}
    return other_notes.figures(verdicts, other)
