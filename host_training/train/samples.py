"""Open-world training samples: notes cropped to their box, negatives mined from the frames,
a folder of negatives, and the photo series each image belongs to.

A classifier trained only on whole frames learns the scene a note was photographed in (the
person behind a held-up note, the table top). Boxes let it see the note alone, and the
frames with the note cut out are exactly the scenes it must not take for a note.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from device.images import IMAGE_SUFFIXES, decode_image
from device.processing import resize
from host_training.train.dataset import DatasetError

log = logging.getLogger(__name__)
BACKGROUND = "background"

# frame, note cropped to its box, mined negative, negative from --negatives, shuffled note,
# a real note that is not ours (--other-exposure: background, pasted like a crop)
FRAME, CROP, MINED, NEGATIVE, JIGSAW = "frame", "crop", "mined", "negative", "jigsaw"
FOREIGN = "foreign"


@dataclass(frozen=True)
class Box:
    """YOLO-normalised note box: centre x, centre y, width, height (0..1)."""

    cx: float
    cy: float
    w: float
    h: float

    def pixels(self, width: int, height: int, margin: float = 0.0) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 in pixels, grown by `margin` of the box size, clipped."""
        bw, bh = self.w * (1 + margin) * width, self.h * (1 + margin) * height
        x0, y0 = round(self.cx * width - bw / 2), round(self.cy * height - bh / 2)
        x1, y1 = round(self.cx * width + bw / 2), round(self.cy * height + bh / 2)
        return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def read_boxes(path: Path) -> dict[str, list[Box]]:
    """File name -> its boxes, from a CSV with columns file, x_center, y_center, width,
    height (YOLO-normalised; other columns such as split and label are ignored)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise DatasetError(f"--boxes {path}: cannot read ({exc})") from None
    need = {"file", "x_center", "y_center", "width", "height"}
    if not rows or not need <= set(rows[0]):
        raise DatasetError(f"--boxes {path}: needs a header with {sorted(need)} (YOLO-normalised)")
    boxes: dict[str, list[Box]] = {}
    for i, r in enumerate(rows, start=2):
        try:
            b = Box(float(r["x_center"]), float(r["y_center"]), float(r["width"]),
                    float(r["height"]))
        except ValueError:
            raise DatasetError(f"--boxes {path}:{i}: not a number in {r}") from None
        if not (0 <= b.cx <= 1 and 0 <= b.cy <= 1 and 0 < b.w <= 1 and 0 < b.h <= 1):
            raise DatasetError(f"--boxes {path}:{i}: values must be YOLO-normalised (0..1)")
        boxes.setdefault(Path(r["file"]).name, []).append(b)
    return boxes


_BURST = re.compile(r"^\d{8}_\d{6}_\d+")


def series_of(path: str) -> str:
    """The photo series a file belongs to, from its name (the banknote dataset's three:
    ``webcam`` frames saved as PNG, ``table`` phone photos IMG_NNNN, ``hand`` phone bursts
    YYYYMMDD_HHMMSS_NNN); anything else is ``other``."""
    name = Path(path).name
    if "_png.rf." in name or name.lower().endswith(".png"):
        return "webcam"
    if "IMG_" in name:
        return "table"
    if _BURST.match(name):
        return "hand"
    return "other"


def series_by_class(series: list[str], labels: list[int] | np.ndarray,
                    names: list[str] | tuple[str, ...], min_frames: int = 20,
                    min_share: float = 0.95) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Frames per photo series and class, and a warning for each series that holds (almost)
    only one class while the dataset has several.

    Such a series is a shortcut the model can learn: the camera, background and light of the
    series stand for the class. The banknote dataset has one (its `hand` series is only
    100000_vnd): trained without the `table` series, the flagship recipe ranked 66 of the
    table's 208 photos first as 100000_vnd, a class the table series does not even hold —
    consistent with it having learnt a phone photo's look as that note. The fix is in the
    data (photograph every class in every setting); the warning says where."""
    counts: dict[str, Counter[str]] = {}
    for sr, lb in zip(series, labels, strict=True):
        counts.setdefault(sr, Counter())[names[int(lb)]] += 1
    warnings = []
    if len({c for row in counts.values() for c in row}) > 1 and len(counts) > 1:
        for sr, row in sorted(counts.items()):
            total = row.total()
            top, n = row.most_common(1)[0]
            if total >= min_frames and n / total >= min_share:
                warnings.append(
                    f"photo series '{sr}' is {n / total:.0%} {top} ({total} frames): the model "
                    f"can learn that series' camera and scene as {top}; add the other classes "
                    f"photographed the same way, or {top} in the other settings")
    return {sr: dict(row) for sr, row in counts.items()}, warnings


@dataclass
class Pool:
    """Training samples beyond the whole frames: images at the model's size, their class
    ids, kind (crop, mined, negative, jigsaw), series, and the note's aspect for crops."""

    images: list[np.ndarray]
    labels: list[int]
    kinds: list[str]
    series: list[str]
    aspects: list[float]

    @classmethod
    def empty(cls) -> Pool:
        return cls([], [], [], [], [])

    def add(self, image: np.ndarray, label: int, kind: str, series: str,
            aspect: float = 1.0) -> None:
        self.images.append(image)
        self.labels.append(label)
        self.kinds.append(kind)
        self.series.append(series)
        self.aspects.append(aspect)

    def __len__(self) -> int:
        return len(self.images)

    def arrays(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.images:
            return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int32)
        return np.stack(self.images), np.asarray(self.labels, np.int32)


def _cut_out(rgb: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """The frame with the note painted over from its surroundings (inpainted at low
    resolution: the result is a scene without a note, not a pixel-perfect repair)."""
    h, w = rgb.shape[:2]
    scale = 128 / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    mask = np.zeros(small.shape[:2], np.uint8)
    mask[int(y0 * scale):int(np.ceil(y1 * scale)), int(x0 * scale):int(np.ceil(x1 * scale))] = 255
    filled = cv2.inpaint(small, mask, 5, cv2.INPAINT_TELEA)
    up = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
    out = rgb.copy()
    out[y0:y1, x0:x1] = up[y0:y1, x0:x1]
    return out


def _outside(rgb: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray | None:
    """The largest strip of the frame beside the box, when it is at least a fifth of it."""
    h, w = rgb.shape[:2]
    strips = [rgb[:y0], rgb[y1:], rgb[:, :x0], rgb[:, x1:]]
    best = max(strips, key=lambda s: s.shape[0] * s.shape[1])
    if best.shape[0] * best.shape[1] < 0.2 * h * w or min(best.shape[:2]) < 0.15 * min(h, w):
        return None
    return best


MAX_CUT = 0.6  # a negative needs at least 40 % of the frame left once the note is cut out


def _hist(rgb: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    h = cv2.calcHist([hsv], [0, 1], None, [18, 8], [0, 180, 0, 256])
    return cv2.normalize(h, h).flatten()


def _same_colours(a: np.ndarray, b: np.ndarray, limit: float = 0.9) -> bool:
    """Whether two images have nearly the same hue/saturation histogram."""
    return cv2.compareHist(_hist(a), _hist(b), cv2.HISTCMP_CORREL) > limit


def jigsaw(image: np.ndarray, rng: np.random.Generator, tiles: int = 3) -> np.ndarray:
    """The image cut into tiles x tiles pieces put back in a shuffled order: the colours and
    texture of a note without its layout (an untaught note that looks like a taught one)."""
    h, w = image.shape[:2]
    th, tw = h // tiles, w // tiles
    pieces = [image[r * th:(r + 1) * th, c * tw:(c + 1) * tw]
              for r in range(tiles) for c in range(tiles)]
    order = rng.permutation(len(pieces))
    while tiles > 1 and np.array_equal(order, np.arange(len(pieces))):
        order = rng.permutation(len(pieces))
    rows = [np.concatenate([pieces[order[r * tiles + c]] for c in range(tiles)], axis=1)
            for r in range(tiles)]
    return cv2.resize(np.concatenate(rows, axis=0), (w, h), interpolation=cv2.INTER_LINEAR)


def mine(paths: tuple[str, ...], labels: np.ndarray, boxes: dict[str, list[Box]], size: int,
         background: int, seed: int, jigsaw_every: int = 2) -> Pool:
    """For each frame with a box: the note cropped to its box (a little margin) with its
    label; one negative from the frame (the note cut out, or the largest strip beside it);
    and for every `jigsaw_every`-th crop a shuffled-tile negative."""
    rng = np.random.default_rng(seed)
    pool = Pool.empty()
    missing = crops = 0
    for i, p in enumerate(tqdm(paths, desc="crops and mined negatives", unit="img",
                               leave=False)):
        bs = boxes.get(Path(p).name)
        if not bs:
            missing += 1
            continue
        rgb = decode_image(Path(p))
        if rgb is None:
            continue
        h, w = rgb.shape[:2]
        series = series_of(p)
        for b in bs:
            x0, y0, x1, y1 = b.pixels(w, h, margin=0.08)
            if x1 - x0 < 8 or y1 - y0 < 8:
                continue
            crop = resize(rgb[y0:y1, x0:x1], size, size)
            pool.add(crop, int(labels[i]), CROP, series, (x1 - x0) / (y1 - y0))
            crops += 1
            if jigsaw_every and crops % jigsaw_every == 0:
                pool.add(jigsaw(crop, rng), background, JIGSAW, series)
        # the negative covers every note in the frame
        boxes_px = [b.pixels(w, h, margin=0.12) for b in bs]
        x0 = min(b[0] for b in boxes_px)
        y0 = min(b[1] for b in boxes_px)
        x1 = max(b[2] for b in boxes_px)
        y1 = max(b[3] for b in boxes_px)
        if (x1 - x0) * (y1 - y0) > MAX_CUT * w * h:
            continue  # the note fills the frame: what is left is no scene (and inpainting
            # with nothing around the hole would give the note back as a "negative")
        strip = _outside(rgb, x0, y0, x1, y1) if rng.random() < 0.5 else None
        neg = strip if strip is not None else _cut_out(rgb, x0, y0, x1, y1)
        neg = resize(np.ascontiguousarray(neg), size, size)
        if _same_colours(neg, resize(rgb[y0:y1, x0:x1], size, size)):
            continue  # a box that misses its note: the "negative" is the note
        pool.add(neg, background, MINED, series)
    if missing:
        log.warning("%d of %d images have no box in --boxes: no crop or mined negative for "
                    "them", missing, len(paths))
    return pool


def load_negatives(root: Path, size: int, background: int, by_folder: bool = False) -> Pool:
    """Every image under `root` (any depth) as the background class; `by_folder` records
    each image's first subfolder (its category) as its series."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"--negatives {root} is not a folder of images")
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in
                   IMAGE_SUFFIXES)
    pool = Pool.empty()
    for f in tqdm(files, desc=f"negatives {root.name}", unit="img", leave=False):
        rgb = decode_image(f)
        if rgb is None:
            log.warning("skipping %s: not a readable image", f)
            continue
        rel = f.relative_to(root).parts
        group = rel[0] if by_folder and len(rel) > 1 else "negatives"
        pool.add(resize(rgb, size, size), background, NEGATIVE, group)
    if not pool.images:
        raise DatasetError(f"--negatives {root} holds no readable images")
    log.info("%s: %d negative images", root, len(pool))
    return pool


def split_pool(pool: Pool, fraction: float, seed: int) -> tuple[Pool, Pool]:
    """A seeded (train, val) split of a pool."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(pool))
    k = round(len(pool) * fraction) if len(pool) > 1 else 0
    parts = []
    for sel in (sorted(idx[k:]), sorted(idx[:k])):
        p = Pool.empty()
        for i in sel:
            p.add(pool.images[i], pool.labels[i], pool.kinds[i], pool.series[i], pool.aspects[i])
        parts.append(p)
    return parts[0], parts[1]
