"""Synthetic "banknote in a slot" images: the demo dataset and the test data.

Needs only numpy and OpenCV, so the demo and the tests can make images without
TensorFlow. Each class is a coloured note with its own pattern, at a random place, angle,
size and lighting over a noisy slot background; `empty` is the slot alone.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# class -> (RGB colour, pattern)
NOTES = {
    "note_5": ((200, 60, 50), "stripes"),
    "note_10": ((60, 170, 80), "circle"),
    "note_20": ((60, 90, 200), "grid"),
}
EMPTY = "empty"
CLASSES = (*NOTES, EMPTY)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    base = rng.uniform(40, 110)
    ramp = np.linspace(-20, 20, w, dtype=np.float32)[None, :, None]
    img = np.full((h, w, 3), base, np.float32) + ramp + rng.normal(0, 6, (h, w, 3))
    # the slot's edges
    img[: h // 10] *= 0.6
    img[-h // 10 :] *= 0.6
    return img


def _note(rng: np.random.Generator, label: str, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    colour, pattern = NOTES[label]
    nw, nh = int(w * rng.uniform(0.45, 0.75)), 0
    nh = int(nw * rng.uniform(0.45, 0.55))
    note = np.empty((nh, nw, 3), np.float32)
    note[:] = np.asarray(colour, np.float32) * rng.uniform(0.8, 1.1)
    dark = tuple(int(c * 0.45) for c in colour)
    cv2.rectangle(note, (2, 2), (nw - 3, nh - 3), dark, max(1, nw // 40))
    if pattern == "stripes":
        for x in range(nw // 8, nw, nw // 6):
            cv2.line(note, (x, 0), (x - nh // 2, nh), dark, max(1, nw // 30))
    elif pattern == "circle":
        cv2.circle(note, (nw // 3, nh // 2), nh // 3, dark, max(1, nw // 25))
    else:
        for x in range(0, nw, nw // 7):
            cv2.line(note, (x, 0), (x, nh), dark, 1)
        for y in range(0, nh, nh // 4):
            cv2.line(note, (0, y), (nw, y), dark, 1)
    mask = np.ones((nh, nw), np.float32)
    canvas = np.zeros((h, w, 3), np.float32)
    cmask = np.zeros((h, w), np.float32)
    x0 = (w - nw) // 2 + int(rng.uniform(-0.15, 0.15) * w)
    y0 = (h - nh) // 2 + int(rng.uniform(-0.15, 0.15) * h)
    x0, y0 = int(np.clip(x0, 0, w - nw)), int(np.clip(y0, 0, h - nh))
    canvas[y0 : y0 + nh, x0 : x0 + nw] = note
    cmask[y0 : y0 + nh, x0 : x0 + nw] = mask
    rot = cv2.getRotationMatrix2D((x0 + nw / 2, y0 + nh / 2), rng.uniform(-25, 25), 1.0)
    canvas = cv2.warpAffine(canvas, rot, (w, h))
    cmask = cv2.warpAffine(cmask, rot, (w, h))[..., None]
    return canvas, cmask


def render(label: str, rng: np.random.Generator, width: int = 160, height: int = 120) -> np.ndarray:
    """One RGB uint8 image of `label` (a key of NOTES, or 'empty')."""
    img = _background(rng, width, height)
    if label != EMPTY:
        if label not in NOTES:
            raise ValueError(f"unknown synthetic class {label!r}: one of {CLASSES}")
        note, mask = _note(rng, label, width, height)
        img = img * (1 - mask) + note * mask
    img = img * rng.uniform(0.75, 1.25) + rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_dataset(out: Path, per_class: int, seed: int = 0, classes: tuple[str, ...] = CLASSES,
                  width: int = 160, height: int = 120) -> Path:
    """Write out/<class>/<n>.png for every class; returns out."""
    rng = np.random.default_rng(seed)
    for label in classes:
        d = Path(out) / label
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rgb = render(label, rng, width, height)
            cv2.imwrite(str(d / f"{i:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return Path(out)


def write_sequence(out: Path, passes: list[str], gap: int = 4, frames_per_object: int = 6,
                   seed: int = 1, width: int = 160, height: int = 120) -> list[str]:
    """A replay folder: object passes separated by empty-slot frames, in file-name order.

    Returns the label of every frame written, in order.
    """
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels: list[str] = []
    for label in passes:
        labels += [EMPTY] * gap + [label] * frames_per_object
    labels += [EMPTY] * gap
    for i, label in enumerate(labels):
        rgb = render(label, rng, width, height)
        cv2.imwrite(str(out / f"{i:05d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return labels
