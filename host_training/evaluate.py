"""Evaluate an int8 TFLite model with the device's own classifier code path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.bundle import load_bundle
from device.inference import TFLiteClassifier
from device.runtimes import cpu_interpreter
from host_training import metrics
from host_training.dataset import DatasetError, load_dataset


def open_classifier(model_path: Path, labels: Path | None = None,
                    num_threads: int = 2) -> TFLiteClassifier:
    bundle = load_bundle(model_path, labels)
    interpreter, runtime = cpu_interpreter(str(bundle.cpu_model), num_threads)
    return TFLiteClassifier(interpreter, bundle, "cpu", runtime, top_k=1)


def tflite_scores(clf: TFLiteClassifier, images: np.ndarray, desc: str = "int8 eval") -> np.ndarray:
    """Dequantized scores for every image (uint8, any size: resized like on the device)."""
    return np.stack([clf.scores(img) for img in tqdm(images, desc=desc, unit="img", leave=False)])


def evaluate_model(model_path: Path, data: Path, labels: Path | None = None) -> dict:
    """`coral-train evaluate`: accuracy, per-class report and confusion matrix."""
    clf = open_classifier(model_path, labels)
    names = clf.bundle.labels
    ds = load_dataset(data, clf.width, clf.resize_policy, class_names=names)
    if len(set(ds.labels.tolist())) == 0:
        raise DatasetError(f"{data}: no images of the model's classes {list(names)}")
    pred = tflite_scores(clf, ds.images).argmax(1)
    out = metrics.report(ds.labels, pred, names)
    out["model"] = {"name": clf.bundle.name, "sha256": clf.bundle.sha256}
    out["skipped"] = list(ds.skipped)
    return out
