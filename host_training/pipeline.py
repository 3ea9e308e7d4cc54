"""The training pipeline: load_dataset → build_model → train → quantize → evaluate → bundle.

Each step is a function with explicit inputs and outputs; this module only wires them
and writes the bundle atomically, so an interrupted run never leaves half a bundle where
the device (or `make deploy`) would pick it up.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from device.bundle import CPU_MODEL, LABELS, write_manifest
from device.errors import CoralError
from host_training import metrics, report
from host_training.dataset import (
    Dataset,
    class_weights,
    load_dataset,
    stratified_sample,
    stratified_split,
)
from host_training.evaluate import open_classifier, tflite_scores
from host_training.settings import TrainSettings

log = logging.getLogger(__name__)
ATTRIBUTION_FILES = ("README.dataset.txt", "LICENSE", "LICENSE.txt", "ATTRIBUTION.txt")


class QuantizationLossError(CoralError):
    exit_code = 3


def load_splits(s: TrainSettings) -> tuple[Dataset, Dataset]:
    full = load_dataset(s.data, s.input_size, s.resize)
    if s.val_data:
        return full, load_dataset(s.val_data, s.input_size, s.resize, class_names=full.class_names)
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


def run_training(s: TrainSettings) -> dict:
    """Train, quantize, evaluate and write the bundle at s.out. Returns the manifest."""
    started = datetime.now(UTC)
    train, val = load_splits(s)  # before TensorFlow's import: a bad dataset fails fast

    from host_training import model as M
    from host_training.quantize import quantize

    n = len(train.class_names)
    log.info("train %s | val %s", train.counts(), val.counts())
    built = M.build_model(n, s)
    weights = class_weights(train.labels, n) if s.class_weights else None
    history = M.History()
    M.train_head(built, train.images, train.labels, val.images, val.labels, n, s, weights,
                 history)
    M.fine_tune(built, train.images, train.labels, val.images, val.labels, n, s, weights,
                history)

    float_pred = M.predict(built.model, val.images, s).argmax(1)
    rep = stratified_sample(train.labels, s.representative_count, s.seed)
    if len(rep) < 100:
        log.warning("only %d training images for int8 calibration (100+ recommended)", len(rep))
    tflite = quantize(built.model, train.images[rep])

    out = Path(s.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (stage / CPU_MODEL).write_bytes(tflite)
        (stage / LABELS).write_text("\n".join(train.class_names) + "\n")
        clf = open_classifier(stage / CPU_MODEL, stage / LABELS)
        scores = tflite_scores(clf, val.images)
        int8_pred = scores.argmax(1)
        float_m = metrics.report(val.labels, float_pred, train.class_names)
        int8_m = metrics.report(val.labels, int8_pred, train.class_names)
        agree = metrics.agreement(float_pred, int8_pred)
        golden = _golden(clf, val, scores, s.golden_per_class, stage)
        attribution = _copy_attribution(s, stage)
        report.plot_curves(history.phases, stage / "training_curves.png")
        report.plot_confusion(int8_m["confusion_matrix"], list(train.class_names),
                              stage / "confusion_matrix.png", "int8 model, validation")
        manifest = {
            "name": s.bundle_name,
            "version": s.version or started.strftime("%Y%m%d%H%M%S"),
            "labels": list(train.class_names),
            "input": {"width": s.input_size, "height": s.input_size, "channels": 3,
                      "resize": s.resize, "colour_order": "RGB", "dtype": "uint8"},
            "architecture": f"MobileNetV2 alpha {s.alpha}",
            "metrics": {"float": float_m, "int8": int8_m, "agreement": agree},
            "dataset": {"source": str(s.data), "val_source": str(s.val_data or "split"),
                        "train": train.counts(), "val": val.counts(),
                        "skipped": [*train.skipped, *val.skipped], "attribution": attribution},
            "training": {"settings": _settings_dict(s), "seconds": history.seconds,
                         "history": history.phases, "started": started.isoformat()},
            "golden": golden,
        }
        from host_training.edgetpu_check import analyse
        from host_training.tflite_model import load_tflite

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

