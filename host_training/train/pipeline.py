"""The training pipeline: load_dataset → build_model → train → quantize → evaluate → bundle.

Each step is a function with explicit inputs and outputs; this module only wires them
and writes the bundle atomically, so an interrupted run never leaves half a bundle where
the device (or `make deploy`) would pick it up.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from device.bundle import CPU_MODEL, LABELS, write_manifest
from device.errors import CoralError
from device.money import from_labels
from host_training.openset import calibrate, nearood
from host_training.train import bundle_files, figures, metrics, report
from host_training.train.dataset import (
    Dataset,
    class_weights,
    load_dataset,
    stratified_sample,
    stratified_split,
)
from host_training.train.evaluate import open_classifier
from host_training.train.figures import outputs_of
from host_training.train.openworld import OpenSet, load_open_set
from host_training.train.samples import (
    FRAME,
    MINED,
    NEGATIVE,
    Pool,
    load_negatives,
    series_by_class,
    series_of,
)
from host_training.train.settings import TrainSettings

log = logging.getLogger(__name__)


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


@dataclass
class Prepared:
    """The data a run trains and measures on, assembled once."""

    train: Dataset
    val: Dataset
    opens: OpenSet
    negative_eval: Pool | None
    train_x: np.ndarray
    train_y: np.ndarray
    kinds: list[str]
    series: list[str]
    by_series: dict
    confounds: list[str]
    extras: object
    val_x: np.ndarray
    val_y: np.ndarray

    @property
    def names(self) -> list[str]:
        return self.opens.class_names


@dataclass
class Fitted:
    """The trained network, its float predictions and its int8 TFLite."""

    history: object
    cache: dict | None
    float_pred: np.ndarray
    outputs: list[str]
    tflite: bytes


def run_training(s: TrainSettings) -> dict:
    """Train, quantize, evaluate and write the bundle at s.out. Returns the manifest."""
    started = datetime.now(UTC)
    p = prepare(s)  # before TensorFlow's import: a bad dataset fails fast
    f = fit(p, s)
    out = Path(s.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (stage / CPU_MODEL).write_bytes(f.tflite)
        (stage / LABELS).write_text("\n".join(p.names) + "\n")
        manifest = measure(stage, p, f, s, started)
        manifest = seal(stage, manifest)
        check_int8_loss(manifest, stage, out, s)
        bundle_files.replace_dir(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    log.info("bundle written to %s", out)
    return manifest


def prepare(s: TrainSettings) -> Prepared:
    """The datasets, the open-world pool and the arrays the network trains on."""
    from host_training.train import model as M

    train, val = load_splits(s)
    opens = load_open_set(s, train, val)
    negative_eval = (load_negatives(s.negative_eval, s.input_size, -1, by_folder=True)
                     if s.negative_eval else None)
    pool_x, pool_y = opens.train_pool.arrays(s.input_size)
    kinds = [FRAME] * len(train.labels) + opens.train_pool.kinds
    frame_series = [series_of(p) for p in train.paths]
    by_series, confounds = series_by_class(frame_series, train.labels, opens.class_names)
    for w in confounds:
        log.warning("%s", w)
    aspects = np.asarray([0.0] * len(train.labels) + opens.train_pool.aspects, np.float32)
    backgrounds = [img for img, k in zip(opens.train_pool.images, opens.train_pool.kinds,
                                         strict=True) if k in (MINED, NEGATIVE)]
    extras = M.Extras(kinds, aspects, np.stack(backgrounds) if backgrounds else None)
    vneg_x, vneg_y = opens.val_pool.arrays(s.input_size)
    if opens.background is None:
        log.warning("no negatives (--negatives) and no boxes (--boxes): the model has no "
                    "background class and its reject path has never seen anything that is "
                    "not one of its classes; it will take such things for a class")
    log.info("train %s + pool %d | val %s + negatives %d", train.counts(), len(pool_y),
             val.counts(), len(vneg_y))
    return Prepared(train, val, opens, negative_eval,
                    np.concatenate([train.images, pool_x]),
                    np.concatenate([train.labels, pool_y]), kinds,
                    frame_series + opens.train_pool.series, by_series, confounds, extras,
                    np.concatenate([val.images, vneg_x]), np.concatenate([val.labels, vneg_y]))


def fit(p: Prepared, s: TrainSettings) -> Fitted:
    """Head on cached features, fine-tuning, the OOD output, int8 quantization."""
    from host_training.train import model as M
    from host_training.train.quantize import quantize

    n = len(p.names)
    built = M.build_model(n, s)
    weights = class_weights(p.train_y, n) if s.class_weights else None
    history = M.History()
    cache = M.train_head(built, p.train_x, p.train_y, p.val_x, p.val_y, n, s, weights,
                         history, p.extras)
    M.fine_tune(built, p.train_x, p.train_y, p.val_x, p.val_y, n, s, weights, history,
                p.extras)
    float_pred = M.predict(built.model, p.val.images, s).argmax(1)
    export, outputs = built.model, ["scores"]
    if s.ood == "class_mean_cosine":
        sample = stratified_sample(p.train_y, 3000, s.seed)
        feats = M.extract_features(built, p.train_x[sample], s, False, "class means")
        export = M.add_similarity(built, nearood.class_means(feats, p.train_y[sample], n))
        outputs = ["scores", "similarity"]
    rep = stratified_sample(p.train_y, s.representative_count, s.seed)
    if len(rep) < 100:
        log.warning("only %d training images for int8 calibration (100+ recommended)", len(rep))
    return Fitted(history, cache, float_pred, outputs, quantize(export, p.train_x[rep]))


def measure(stage: Path, p: Prepared, f: Fitted, s: TrainSettings, started) -> dict:
    """The int8 model in `stage` measured: accuracy, its operating point, near and far
    figures, golden images, plots; the manifest that records them."""
    names = p.names
    clf = open_classifier(stage / CPU_MODEL, stage / LABELS, outputs=f.outputs)
    val_out = outputs_of(clf, p.val_x, "int8 eval")
    scores = val_out[0][: len(p.val.labels)]
    float_m = metrics.report(p.val.labels, f.float_pred, names)
    int8_m = metrics.report(p.val.labels, scores.argmax(1), names)
    background = [p.opens.background] if p.opens.background else []
    unknown = [lb for lb in names if lb.lower() in ("unknown", "other")]
    point = calibrate.calibrate(val_out, p.val_y, names, background, unknown, s.ood,
                                s.ood_keep, s.max_false_accept, s.refused_labels,
                                s.score_keep)
    neg = p.negative_eval
    neg_out = outputs_of(clf, neg.images, "negative set") if neg else None
    openset = figures.open_set_figures(point, names, val_out, p.val_y, len(p.val.labels),
                                       neg_out, neg, s)
    calibrate.plot_curves(val_out, p.val_y, names, point, neg_out,
                          stage / "operating_curves.png")
    if f.cache is not None and s.loso:
        openset["loso"] = figures.loso(f.cache, p.train_y, p.series, p.kinds, p.val, names, s)
    openset["lodo"] = figures.lodo(f.cache, p.train_y, p.val_y, names, point, s)
    if s.other:
        openset["other_notes"] = figures.other_notes_figures(clf, point, names, s)
    report.plot_curves(f.history.phases, stage / "training_curves.png")
    report.plot_confusion(openset["validation_all"]["confusion"],
                          stage / "confusion_matrix.png",
                          "int8 model + operating point, validation")
    return {
        "name": s.bundle_name,
        "version": s.version or started.strftime("%Y%m%d%H%M%S"),
        "labels": list(names),
        "input": {"width": s.input_size, "height": s.input_size, "channels": 3,
                  "resize": s.resize, "colour_order": "RGB", "dtype": "uint8"},
        "outputs": f.outputs,
        "decision": point.model_dump(mode="json"),
        "denominations": from_labels(names),
        "architecture": f"MobileNetV2 alpha {s.alpha}",
        "metrics": {"float": float_m, "int8": int8_m,
                    "agreement": metrics.agreement(f.float_pred, scores.argmax(1))},
        "open_set": openset,
        "dataset": _dataset_section(p, s, bundle_files.copy_attribution(s, stage)),
        "training": {"settings": bundle_files.settings_dict(s), "seconds": f.history.seconds,
                     "history": f.history.phases, "started": started.isoformat()},
        "golden": bundle_files.golden(clf, p.val, scores, s.golden_per_class, stage),
    }


def _dataset_section(p: Prepared, s: TrainSettings, attribution: list[str]) -> dict:
    pool = p.opens.train_pool
    return {"source": str(s.data), "val_source": str(s.val_data or "split"),
            "train": p.train.counts(), "val": p.val.counts(),
            "pool": {k: pool.kinds.count(k) for k in sorted(set(pool.kinds))},
            "val_negatives": len(p.val_y) - len(p.val.labels),
            "negatives": str(s.negatives) if s.negatives else None,
            "boxes": str(s.boxes) if s.boxes else None,
            "skipped": [*p.train.skipped, *p.val.skipped], "attribution": attribution,
            "series": {"frames": p.by_series, "warnings": p.confounds}}


def seal(stage: Path, manifest: dict) -> dict:
    """The Edge TPU op check and report.md, then the manifest with every file's sha256
    (validated by device.bundle.Manifest as it is written)."""
    from host_training.edgetpu.edgetpu_check import analyse
    from host_training.train.tflite_model import load_tflite

    check = analyse(load_tflite(stage / CPU_MODEL))
    manifest["edgetpu_check"] = {k: check[k] for k in ("tpu_ops", "cpu_ops", "verdict")}
    report.write_report(stage, manifest)
    return write_manifest(stage, manifest)


def check_int8_loss(manifest: dict, stage: Path, out: Path, s: TrainSettings) -> None:
    """Refuse a bundle whose int8 model lost more than allowed (kept aside to inspect)."""
    float_m, int8_m = manifest["metrics"]["float"], manifest["metrics"]["int8"]
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
