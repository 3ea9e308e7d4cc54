"""The training pipeline: load_dataset → build_model → train → quantize → evaluate → bundle.

Each step is a function with explicit inputs and outputs; this module only wires them
and writes the bundle atomically, so an interrupted run never leaves half a bundle where
the device (or `make deploy`) would pick it up.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from device.bundle import CPU_MODEL, LABELS, write_manifest
from device.errors import CoralError
from device.openset import OperatingPoint, read_outputs
from host_training.openset import calibrate, nearood
from host_training.train import metrics, report
from host_training.train.dataset import (
    Dataset,
    class_weights,
    load_dataset,
    stratified_sample,
    stratified_split,
)
from host_training.train.evaluate import open_classifier
from host_training.train.samples import (
    FOREIGN,
    FRAME,
    MINED,
    NEGATIVE,
    Pool,
    load_negatives,
    mine,
    read_boxes,
    series_by_class,
    series_of,
    split_pool,
)
from host_training.train.settings import TrainSettings

log = logging.getLogger(__name__)
ATTRIBUTION_FILES = ("README.dataset.txt", "LICENSE", "LICENSE.txt", "ATTRIBUTION.txt")


class QuantizationLossError(CoralError):
    exit_code = 3


def load_splits(s: TrainSettings) -> tuple[Dataset, Dataset]:
    # with negatives or boxes, the background class makes a single note class a classifier
    full = load_dataset(s.data, s.input_size, s.resize, roi=s.roi,
                        min_classes=1 if s.negatives or s.boxes else 2)
    if s.val_data:
        return full, load_dataset(s.val_data, s.input_size, s.resize,
                                  class_names=full.class_names, roi=s.roi)
    tr, va = stratified_split(full.labels, s.val_split, s.seed)
    return full.subset(tr), full.subset(va)


def _golden(clf, val: Dataset, scores: np.ndarray, per_class: int, out: Path) -> list[dict]:
    """The most confidently right validation images, per class, as JPEGs the device can
    re-classify after a deploy; kept only if the decoded JPEG still gives its label."""
    gdir = out / "golden"
    picked: list[dict] = []
    pred = scores.argmax(1)
    for c, name in enumerate(val.class_names):
        idx = [i for i in np.argsort(-scores[:, c]) if val.labels[i] == c and pred[i] == c]
        kept = 0
        for i in idx:
            if kept >= per_class:
                break
            gdir.mkdir(exist_ok=True)
            f = gdir / f"{c:02d}_{kept}.jpg"
            cv2.imwrite(str(f), cv2.cvtColor(val.images[i], cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 92])
            rgb = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
            if int(clf.scores(rgb).argmax()) != c:
                f.unlink()
                continue
            picked.append({"file": f.relative_to(out).as_posix(), "label": name})
            kept += 1
    return picked


def _copy_attribution(s: TrainSettings, out: Path) -> list[str]:
    copied = []
    for d in (s.data, s.data.parent):
        for name in ATTRIBUTION_FILES:
            if (d / name).is_file() and not (out / name).exists():
                shutil.copy(d / name, out / name)
                copied.append(name)
    return copied


def _settings_dict(s: TrainSettings) -> dict:
    d = s.model_dump(mode="json")
    d["fine_tune_from"] = s.ft_from
    d["fine_tune_learning_rate"] = s.ft_lr
    return d


@dataclass
class OpenSet:
    """Everything beyond the whole frames: the class list with its background class, the
    training pool (crops, mined and folder negatives) and the validation negatives."""

    class_names: tuple[str, ...]
    background: str | None
    train_pool: Pool
    val_pool: Pool


def load_open_set(s: TrainSettings, train: Dataset, val: Dataset) -> OpenSet:
    """Crops and negatives from --boxes and --negatives (none without them)."""
    names = train.class_names
    if not (s.boxes or s.negatives or s.other_exposure):
        return OpenSet(names, None, Pool.empty(), Pool.empty())
    if s.background_label not in names:
        names = (*names, s.background_label)
    bg = names.index(s.background_label)
    train_pool, val_pool = Pool.empty(), Pool.empty()
    if s.boxes:
        boxes = read_boxes(s.boxes)
        train_pool = mine(train.paths, train.labels, boxes, s.input_size, bg, s.seed)
        mined_val = mine(val.paths, val.labels, boxes, s.input_size, bg, s.seed + 1)
        # Validation keeps whole frames as its notes, and only negatives that can really
        # happen (scenes without the note): jigsaw tiles teach, but calibrating the class
        # thresholds on them would reject real notes for the sake of an impossible input.
        for i, k in enumerate(mined_val.kinds):
            if k == MINED:
                val_pool.add(mined_val.images[i], mined_val.labels[i], k, mined_val.series[i])
    if s.other_exposure:
        # outlier exposure: real notes of other currencies (the part of --other that may be
        # trained on) as background, pasted onto scenes like the crops of our notes
        from host_training.openset import other_notes

        notes = other_notes.load_other(s.other, s.input_size, names, (other_notes.TRAIN,),
                                       s.resize)
        for g in notes.images:
            if g.endswith("/" + other_notes.TRAIN):
                for img, asp in zip(notes.images[g], notes.aspects[g], strict=True):
                    train_pool.add(img, bg, FOREIGN, "other", asp)
    if s.negatives:
        neg_train, neg_val = split_pool(load_negatives(s.negatives, s.input_size, bg),
                                        s.val_split, s.seed)
        for src, dst in ((neg_train, train_pool), (neg_val, val_pool)):
            for i in range(len(src)):
                dst.add(src.images[i], src.labels[i], src.kinds[i], src.series[i])
    log.info("open set: train pool %s | validation negatives %d",
             {k: train_pool.kinds.count(k) for k in sorted(set(train_pool.kinds))},
             len(val_pool))
    return OpenSet(names, s.background_label, train_pool, val_pool)


def _outputs(clf, images: np.ndarray, desc: str) -> list[np.ndarray]:
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


def run_training(s: TrainSettings) -> dict:
    """Train, quantize, evaluate and write the bundle at s.out. Returns the manifest."""
    started = datetime.now(UTC)
    train, val = load_splits(s)  # before TensorFlow's import: a bad dataset fails fast
    opens = load_open_set(s, train, val)
    negative_eval = (load_negatives(s.negative_eval, s.input_size, -1, by_folder=True)
                     if s.negative_eval else None)

    from host_training.train import model as M
    from host_training.train.quantize import quantize

    names = opens.class_names
    n = len(names)
    pool_x, pool_y = opens.train_pool.arrays(s.input_size)
    train_x = np.concatenate([train.images, pool_x])
    train_y = np.concatenate([train.labels, pool_y])
    kinds = [FRAME] * len(train.labels) + opens.train_pool.kinds
    frame_series = [series_of(p) for p in train.paths]
    series = frame_series + opens.train_pool.series
    by_series, confounds = series_by_class(frame_series, train.labels, names)
    for w in confounds:
        log.warning("%s", w)
    aspects = np.asarray([0.0] * len(train.labels) + opens.train_pool.aspects, np.float32)
    bg_kinds = (MINED, NEGATIVE)
    backgrounds = [img for img, k in zip(opens.train_pool.images, opens.train_pool.kinds,
                                         strict=True) if k in bg_kinds]
    extras = M.Extras(kinds, aspects, np.stack(backgrounds) if backgrounds else None)
    vneg_x, vneg_y = opens.val_pool.arrays(s.input_size)
    val_x = np.concatenate([val.images, vneg_x])
    val_y = np.concatenate([val.labels, vneg_y])
    if opens.background is None:
        log.warning("no negatives (--negatives) and no boxes (--boxes): the model has no "
                    "background class and its reject path has never seen anything that is "
                    "not one of its classes; it will take such things for a class")
    log.info("train %s + pool %d | val %s + negatives %d", train.counts(), len(pool_y),
             val.counts(), len(vneg_y))
    built = M.build_model(n, s)
    weights = class_weights(train_y, n) if s.class_weights else None
    history = M.History()
    cache = M.train_head(built, train_x, train_y, val_x, val_y, n, s, weights, history, extras)
    M.fine_tune(built, train_x, train_y, val_x, val_y, n, s, weights, history, extras)

    float_pred = M.predict(built.model, val.images, s).argmax(1)
    export, outputs = built.model, ["scores"]
    if s.ood == "class_mean_cosine":
        sample = stratified_sample(train_y, 3000, s.seed)
        feats = M.extract_features(built, train_x[sample], s, False, "class means")
        export = M.add_similarity(built, nearood.class_means(feats, train_y[sample], n))
        outputs = ["scores", "similarity"]
    rep = stratified_sample(train_y, s.representative_count, s.seed)
    if len(rep) < 100:
        log.warning("only %d training images for int8 calibration (100+ recommended)", len(rep))
    tflite = quantize(export, train_x[rep])

    out = Path(s.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (stage / CPU_MODEL).write_bytes(tflite)
        (stage / LABELS).write_text("\n".join(names) + "\n")
        clf = open_classifier(stage / CPU_MODEL, stage / LABELS, outputs=outputs)
        val_out = _outputs(clf, val_x, "int8 eval")
        scores = val_out[0][: len(val.labels)]
        int8_pred = scores.argmax(1)
        float_m = metrics.report(val.labels, float_pred, names)
        int8_m = metrics.report(val.labels, int8_pred, names)
        agree = metrics.agreement(float_pred, int8_pred)
        background = [opens.background] if opens.background else []
        unknown = [lb for lb in names if lb.lower() in ("unknown", "other")]
        point = calibrate.calibrate(val_out, val_y, names, background, unknown, s.ood,
                                    s.ood_keep, s.max_false_accept, s.refused_labels)
        neg_out = _outputs(clf, negative_eval.images, "negative set") if negative_eval else None
        openset = _open_set_figures(point, names, val_out, val_y, len(val.labels), neg_out,
                                    negative_eval, s)
        calibrate.plot_curves(val_out, val_y, names, point, neg_out,
                              stage / "operating_curves.png")
        if cache is not None and s.loso:
            openset["loso"] = _loso(cache, train_y, series, kinds, val, names, s)
        openset["lodo"] = _lodo(cache, train_y, val_y, names, point, s)
        if s.other:
            openset["other_notes"] = _other_notes(clf, point, names, s)
        golden = _golden(clf, val, scores, s.golden_per_class, stage)
        attribution = _copy_attribution(s, stage)
        report.plot_curves(history.phases, stage / "training_curves.png")
        report.plot_confusion(openset["validation_all"]["confusion"],
                              stage / "confusion_matrix.png",
                              "int8 model + operating point, validation")
        manifest = {
            "name": s.bundle_name,
            "version": s.version or started.strftime("%Y%m%d%H%M%S"),
            "labels": list(names),
            "input": {"width": s.input_size, "height": s.input_size, "channels": 3,
                      "resize": s.resize, "colour_order": "RGB", "dtype": "uint8"},
            "outputs": outputs,
            "decision": point.model_dump(mode="json"),
            "architecture": f"MobileNetV2 alpha {s.alpha}",
            "metrics": {"float": float_m, "int8": int8_m, "agreement": agree},
            "open_set": openset,
            "dataset": {"source": str(s.data), "val_source": str(s.val_data or "split"),
                        "train": train.counts(), "val": val.counts(),
                        "pool": {k: opens.train_pool.kinds.count(k)
                                 for k in sorted(set(opens.train_pool.kinds))},
                        "val_negatives": len(vneg_y),
                        "negatives": str(s.negatives) if s.negatives else None,
                        "boxes": str(s.boxes) if s.boxes else None,
                        "skipped": [*train.skipped, *val.skipped], "attribution": attribution,
                        "series": {"frames": by_series, "warnings": confounds}},
            "training": {"settings": _settings_dict(s), "seconds": history.seconds,
                         "history": history.phases, "started": started.isoformat()},
            "golden": golden,
        }
        from host_training.edgetpu.edgetpu_check import analyse
        from host_training.train.tflite_model import load_tflite

        check = analyse(load_tflite(stage / CPU_MODEL))
        manifest["edgetpu_check"] = {k: check[k] for k in ("tpu_ops", "cpu_ops", "verdict")}
        report.write_report(stage, manifest)
        manifest = write_manifest(stage, manifest)
        drop = (float_m["accuracy"] - int8_m["accuracy"]) * 100
        # One validation image is the finest a small set can measure: never fail on less.
        if drop > max(s.max_int8_drop, 100 / max(1, int8_m["n"]) + 1e-9):
            keep = out.with_name(out.name + ".rejected")
            shutil.rmtree(keep, ignore_errors=True)
            stage.rename(keep)
            raise QuantizationLossError(
                f"int8 accuracy {int8_m['accuracy']:.4f} is {drop:.1f} points below float "
                f"{float_m['accuracy']:.4f} (allowed {s.max_int8_drop}): the bundle was kept "
                f"at {keep} for inspection. Try more calibration images "
                "(--representative-count) or raise --max-int8-drop.")
        _replace_dir(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    log.info("bundle written to %s", out)
    return manifest


def _open_set_figures(point: OperatingPoint, names, val_out, val_y, n_frames: int,
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
                 "ood_kind": point.ood.kind if point.ood else "none"}
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


def _loso(cache: dict, train_y: np.ndarray, series: list[str], kinds: list[str], val: Dataset,
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


def _lodo(cache: dict | None, train_y: np.ndarray, val_y: np.ndarray, names,
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
                       point.background_labels, never, s.ood_keep, s.max_false_accept, s.seed)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _other_notes(clf, point: OperatingPoint, names, s: TrainSettings) -> dict:
    """The bundle's verdicts on real notes that are not ours: the evaluation part of
    --other's irr/eur and its vnd-phone photos (never trained on)."""
    from host_training.openset import other_notes

    other = other_notes.load_other(s.other, s.input_size, names, parts=(other_notes.EVAL,),
                                   resize_policy=s.resize)
    verdicts = {g: calibrate.judge_all(point, names, _outputs(clf, other.array(g, s.input_size),
                                                              g))
                for g in other.images}
    return other_notes.figures(verdicts, other)


def _replace_dir(new: Path, target: Path) -> None:
    """Move `new` to `target`, swapping out an existing bundle only once `new` is complete."""
    if target.exists():
        if not (target / "manifest.json").is_file() and any(target.iterdir()):
            raise CoralError(f"{target} exists and is not a model bundle: choose another --out")
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(target)

