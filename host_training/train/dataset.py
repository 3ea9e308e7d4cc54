"""Load an image-folder dataset (one subfolder per class) into arrays at the model's size.

Images are decoded and resized by the device's own functions, so training sees exactly
the pixels the device will feed the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.errors import CoralError
from device.images import IMAGE_SUFFIXES, decode_image
from device.processing import resize
from device.regions import RoiConfig, crop

log = logging.getLogger(__name__)


class DatasetError(CoralError):
    """The dataset cannot be used; the message says what to fix."""

    exit_code = 2


@dataclass(frozen=True)
class Dataset:
    images: np.ndarray  # N x H x W x 3 uint8 RGB at the model's input size
    labels: np.ndarray  # N int32 class ids
    class_names: tuple[str, ...]
    paths: tuple[str, ...]
    skipped: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.class_names)}

    def subset(self, idx: np.ndarray) -> Dataset:
        return Dataset(self.images[idx], self.labels[idx], self.class_names,
                       tuple(self.paths[i] for i in idx))


def scan(root: Path, class_names: tuple[str, ...] | None = None,
         min_classes: int = 2) -> dict[str, list[Path]]:
    """Class name -> image files; DatasetError for anything that is not a usable dataset.
    `min_classes` 1: a single class is fine (negatives make the background class)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset {root} is not a folder: give a folder with one "
                           "subfolder of images per class")
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not dirs:
        raise DatasetError(f"dataset {root} has no class subfolders: put each class's images "
                           "in a subfolder named after the class")
    files = {d.name: sorted(f for f in d.rglob("*")
                            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES) for d in dirs}
    if class_names is not None:
        extra = set(files) - set(class_names)
        if extra:
            raise DatasetError(f"{root}: classes {sorted(extra)} are not in the model's labels "
                               f"{list(class_names)}")
    empty = [c for c, fs in files.items() if not fs]
    if empty and all(not fs for fs in files.values()):
        raise DatasetError(f"dataset {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if empty:
        raise DatasetError(f"dataset {root}: class folder(s) {empty} hold no images: add images "
                           "or remove the folder")
    if class_names is None and len(files) < min_classes:
        raise DatasetError(f"dataset {root} has a single class ({next(iter(files))}): a "
                           "classifier needs at least two (add e.g. an 'empty' class, or "
                           "--negatives)")
    return files


def load_dataset(root: Path, size: int, resize_policy: str = "stretch",
                 class_names: tuple[str, ...] | None = None,
                 roi: tuple[float, float, float, float] | None = None,
                 min_classes: int = 2) -> Dataset:
    """Scan, decode and resize every image, skipping unreadable files with a warning.

    `roi` (x, y, width, height in fractions) crops each image first with the device's own
    function (device.regions.crop), so training sees a region exactly as the daemon cuts it.
    """
    region = None if roi is None else RoiConfig(name="train", x=roi[0], y=roi[1],
                                                width=roi[2], height=roi[3])
    files = scan(root, class_names, min_classes)
    names = class_names or tuple(files)
    todo = [(f, names.index(c)) for c, fs in files.items() for f in fs]
    images = np.empty((len(todo), size, size, 3), np.uint8)
    labels, paths, skipped = [], [], []
    n = 0
    for f, label in tqdm(todo, desc=f"scanning {Path(root).name}", unit="img", leave=False):
        rgb = decode_image(f)
        if rgb is None:
            log.warning("skipping %s: not a readable image", f)
            skipped.append(str(f))
            continue
        if region is not None:
            rgb = crop(rgb, region)
        resize(rgb, size, size, resize_policy, out=images[n])
        labels.append(label)
        paths.append(str(f))
        n += 1
    ds = Dataset(images[:n], np.asarray(labels, np.int32), names, tuple(paths), tuple(skipped))
    counts = ds.counts()
    missing = [c for c, k in counts.items() if k == 0 and c in files]
    if n == 0:
        raise DatasetError(f"dataset {root}: no image could be read ({len(skipped)} corrupt)")
    if missing:
        raise DatasetError(f"dataset {root}: every image of class(es) {missing} is unreadable")
    log.info("%s: %d images in %d classes%s: %s", root, n, len(names),
             f" ({len(skipped)} skipped)" if skipped else "",
             ", ".join(f"{c}={k}" for c, k in counts.items()))
    return ds


def stratified_split(labels: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val), the same fraction of every class in val, at least one each."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) < 2:
            raise DatasetError(f"class id {c} has {len(idx)} image: a validation split needs "
                               "at least 2 per class (or give --val-data)")
        k = min(len(idx) - 1, max(1, round(len(idx) * fraction)))
        val.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.asarray(train)), np.sort(np.asarray(val))


def stratified_sample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """About `count` indices with every class in proportion (the int8 calibration set)."""
    if count >= len(labels):
        return np.arange(len(labels))
    _, pick = stratified_split(labels, count / len(labels), seed)
    return pick


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """'balanced' weights: n / (k * count_c), so each class counts the same in the loss."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return {i: float(len(labels) / (n_classes * c)) for i, c in enumerate(counts) if c}


# -- several --data folders (e.g. `make collect` from a few devices plus the original set) --
def image_device(name: str) -> str:
    """The device a frame came from: frames saved on a device are named `<device>__…`."""
    head, sep, _ = name.partition("__")
    return head if sep and head else ""


def _class_files(folder: Path) -> dict[str, list[Path]]:
    """scan() without its whole-dataset checks: one of several folders may hold a single
    class (a device's captures); the union is checked when it is loaded."""
    if not Path(folder).is_dir():
        raise DatasetError(f"dataset {folder} is not a folder: give a folder with one "
                           "subfolder of images per class")
    return {d.name: sorted(f for f in d.rglob("*")
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            for d in sorted(Path(folder).iterdir())
            if d.is_dir() and not d.name.startswith(".")}


def folder_classes(folder: Path) -> list[str]:
    """The class names (subfolders) of a class-folder dataset."""
    return list(_class_files(folder))


def data_sources(folders: list[Path]) -> dict[str, dict[str, int]]:
    """Per --data folder, how many images each device gave ('(not from a device)' for
    the rest), counted before the validation split."""
    out: dict[str, dict[str, int]] = {}
    for folder in folders:
        counts: dict[str, int] = {}
        for files in _class_files(folder).values():
            for f in files:
                key = image_device(f.name) or "(not from a device)"
                counts[key] = counts.get(key, 0) + 1
        out[str(folder)] = dict(sorted(counts.items()))
    return out


def union_folder(folders: list[Path], into: Path, exclude: Collection[str] = (),
                 only: Collection[str] | None = None,
                 keep: Callable[[Path], bool] | None = None) -> Path:
    """One class-folder dataset over several: `into/<class>/<n>/` links to folder n's
    images (nothing copied; the loader reads class folders recursively), without the
    classes in `exclude` and, given `only`, with those classes alone (a fold that leaves
    some out, and the left-out photos) and, given `keep`, the files it keeps (a photo
    series held out). The folders' attribution files are gathered into one ATTRIBUTION.txt."""
    notes = []
    for n, folder in enumerate(folders):
        for label, files in _class_files(folder).items():
            if label in exclude or (only is not None and label not in only):
                continue
            if keep is not None:
                files = [f for f in files if keep(f)]
                if not files:
                    continue
            sub = into / label / str(n)
            sub.mkdir(parents=True, exist_ok=True)
            for f in files:
                (sub / f.name).symlink_to(f.resolve())
        for d in (folder, folder.parent):
            for name in ("README.dataset.txt", "LICENSE", "LICENSE.txt", "ATTRIBUTION.txt"):
                if (d / name).is_file():
                    notes.append(f"== {d / name} ==\n{(d / name).read_text(errors='replace')}")
    if notes:
        (into / "ATTRIBUTION.txt").write_text("\n".join(dict.fromkeys(notes)))
    return into
