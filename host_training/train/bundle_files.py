"""The files a bundle carries beside its model: golden images for the device's self-test,
the dataset's attribution, the settings it was trained with; and the atomic swap that puts
a finished bundle where the device (or `make deploy`) picks it up."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np

from device.errors import CoralError
from host_training.train.dataset import Dataset
from host_training.train.settings import TrainSettings

log = logging.getLogger(__name__)
ATTRIBUTION_FILES = ("README.dataset.txt", "LICENSE", "LICENSE.txt", "ATTRIBUTION.txt")


def golden(clf, val: Dataset, scores: np.ndarray, per_class: int, out: Path) -> list[dict]:
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


def copy_attribution(s: TrainSettings, out: Path) -> list[str]:
    copied = []
    for d in (s.data, s.data.parent):
        for name in ATTRIBUTION_FILES:
            if (d / name).is_file() and not (out / name).exists():
                shutil.copy(d / name, out / name)
                copied.append(name)
    return copied


def settings_dict(s: TrainSettings) -> dict:
    d = s.model_dump(mode="json")
    d["fine_tune_from"] = s.ft_from
    d["fine_tune_learning_rate"] = s.ft_lr
    return d




def replace_dir(new: Path, target: Path) -> None:
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
