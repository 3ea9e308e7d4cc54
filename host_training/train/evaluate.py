"""Evaluate an int8 TFLite model with the device's own classifier code path and reject rule."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.bundle import load_bundle
from device.inference import TFLiteClassifier
from device.openset import fallback_point, operating_point, read_outputs
from device.runtimes import cpu_interpreter
from host_training.openset import calibrate
from host_training.train import metrics
from host_training.train.dataset import DatasetError, load_dataset


def open_classifier(model_path: Path, labels: Path | None = None, num_threads: int = 2,
                    outputs: list[str] | None = None) -> TFLiteClassifier:
    """The device's CPU classifier for a bundle, or a bare .tflite (whose output names,
    when it has several, are given as `outputs`)."""
    bundle = load_bundle(model_path, labels)
    if outputs is not None and Path(model_path).is_file():
        bundle = replace(bundle, outputs=tuple(outputs))
    interpreter, runtime = cpu_interpreter(str(bundle.cpu_model), num_threads)
    return TFLiteClassifier(interpreter, bundle, "cpu", runtime, top_k=1)


def tflite_scores(clf: TFLiteClassifier, images: np.ndarray, desc: str = "int8 eval") -> np.ndarray:
    """Dequantized scores for every image (uint8, any size: resized like on the device)."""
    return np.stack([clf.scores(img) for img in tqdm(images, desc=desc, unit="img", leave=False)])


def tflite_outputs(clf: TFLiteClassifier, images, desc: str = "int8 eval") -> list[np.ndarray]:
    """Every dequantized output for every image: one N x n array per model output."""
    rows = []
    for img in tqdm(images, desc=desc, unit="img", leave=False):
        clf.infer(img)
        rows.append(read_outputs(clf.interpreter))
    k = len(clf.interpreter.get_output_details())
    if not rows:
        return [np.zeros((0, len(clf.bundle.labels)), np.float32) for _ in range(k)]
    return [np.stack([r[i] for r in rows]) for i in range(k)]


def evaluate_model(model_path: Path, data: Path | None, labels: Path | None = None,
                   negatives: Path | None = None, other: Path | None = None,
                   replay_frames: int = 0, untaught: Path | None = None) -> dict:
    """`coral-train evaluate`: top-1 accuracy, per-class report and confusion matrix, and what
    the bundle's operating point (device.policy.judge) accepts, on a class-folder dataset,
    a folder of negatives (far) and/or real notes that are not ours (near: the evaluation
    part of a banknotes-other folder) and/or class folders of notes it was never taught
    (`untaught`: all must be refused; with `data`, also the curve of openset/untaught.py);
    with the near figures the bundle's training measured (leave-one-denomination-out), when
    its manifest has them."""
    if data is None and negatives is None and other is None and untaught is None:
        raise DatasetError("give --data (a class-folder dataset), --negatives (a folder of "
                           "images that are none of the classes), --other (real notes "
                           "that are not ours, e.g. ../shared/datasets/banknotes-other) and/or "
                           "--untaught (class folders of notes the model must refuse)")
    clf = open_classifier(model_path, labels)
    names = clf.bundle.labels
    point = operating_point(clf.bundle.manifest)
    has_decision = point is not None
    point = point or fallback_point(names)
    never = [*point.background_labels, *point.unknown_labels, *point.refused_labels]
    out: dict = {"model": {"name": clf.bundle.name, "sha256": clf.bundle.sha256},
                 "has_decision": has_decision, "operating_point": point.model_dump(mode="json")}
    if data is not None:
        ds = load_dataset(data, clf.width, clf.resize_policy, class_names=names)
        if len(set(ds.labels.tolist())) == 0:
            raise DatasetError(f"{data}: no images of the model's classes {list(names)}")
        outs = tflite_outputs(clf, ds.images)
        out.update(metrics.report(ds.labels, outs[0].argmax(1), names))
        out["skipped"] = list(ds.skipped)
        verdicts = calibrate.judge_all(point, names, outs)
        out["decision"] = calibrate.decision_report(verdicts, ds.labels, names, never)
        out["accepted"] = [v.accepted for v in verdicts]
    if untaught is not None:
        out["untaught"] = _untaught(clf, point, untaught, outs if data is not None else None,
                                    ds.labels if data is not None else None)
    if negatives is not None:
        from host_training.train.samples import load_negatives

        pool = load_negatives(negatives, clf.width, -1, by_folder=True)
        images, _ = pool.arrays(clf.width)
        verdicts = calibrate.judge_all(point, names, tflite_outputs(clf, images, "negatives"))
        rep = calibrate.decision_report(verdicts, np.full(len(verdicts), -1), names, never)
        groups = np.asarray(pool.series)
        acc = np.array([v.accepted for v in verdicts])
        rep["by_group"] = {g: {"n": int((groups == g).sum()),
                               "false_accept": float(acc[groups == g].mean())}
                           for g in sorted(set(groups))}
        out["negatives"] = rep
    if other is not None:
        from host_training.openset import other_notes

        notes = other_notes.load_other(other, clf.width, names, parts=(other_notes.EVAL,),
                                       resize_policy=clf.resize_policy)
        verdicts = {g: calibrate.judge_all(point, names, tflite_outputs(
            clf, notes.array(g, clf.width), g)) for g in notes.images}
        out["other_notes"] = other_notes.figures(verdicts, notes)
        if replay_frames:
            out["other_notes_events"] = _replays(clf, point, names, notes, replay_frames)
    out["lodo"] = clf.bundle.manifest.get("open_set", {}).get("lodo")
    if "decision" not in out:
        out["decision"] = {}
    return out


def _untaught(clf: TFLiteClassifier, point, folder: Path, val_outputs, val_y) -> dict:
    """openset/untaught.py's figures for class folders of notes the bundle does not know."""
    from host_training.openset import untaught

    names = clf.bundle.labels
    ds = load_dataset(folder, clf.width, clf.resize_policy, min_classes=1)
    known = sorted(set(ds.class_names) & set(names))
    if known:
        raise DatasetError(f"{folder}: class(es) {known} are ones the model knows; the "
                           "untaught folder holds only classes it must refuse")
    settings = clf.bundle.manifest.get("training", {}).get("settings", {})
    return untaught.measure(point, names, val_outputs, val_y,
                            tflite_outputs(clf, ds.images, "untaught"),
                            [ds.class_names[i] for i in ds.labels],
                            float(settings.get("max_false_accept", 0.005)))


def _replays(clf: TFLiteClassifier, point, names, notes, frames: int) -> dict:
    """Per object: every other-notes photo as a short replay through the device's decider."""
    from host_training.openset import replays

    def outputs(clip: np.ndarray) -> list[np.ndarray]:
        return tflite_outputs(clf, clip, "replay")

    by_group = {g: replays.replay(outputs, point, names, imgs, frames=frames)
                for g, imgs in notes.images.items()}
    return replays.figures(by_group, notes.labels)
