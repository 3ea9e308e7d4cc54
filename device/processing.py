"""Pure numpy pre- and post-processing, shared by the device and the trainer.

Kept apart from any interpreter (as pycoral keeps get_scores apart from
get_classes_from_scores) so they can be tested without a model, and so training and
inference prepare pixels by exactly one definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Class:
    """One ranked class."""

    id: int
    label: str
    score: float


def resize(image: np.ndarray, width: int, height: int, policy: str = "stretch",
           out: np.ndarray | None = None, scratch: dict | None = None) -> np.ndarray:
    """Resize an HxWx3 uint8 image to (height, width) by the bundle's resize policy.

    ``stretch`` resizes the whole frame (what Coral's models expect), ``center_crop``
    crops the largest centred region of the target aspect first, ``letterbox`` pads with
    black to keep the aspect. Shrinking halves with a Gaussian pyramid while the image is
    at least twice the target, then finishes bilinearly: antialiased like area averaging
    (no moiré on banknote print) at a quarter of its cost. ``out``, when given, is filled
    in place; ``scratch``, a dict the caller keeps, holds the halved images between calls
    so a steady stream of frames allocates nothing.
    """
    h, w = image.shape[:2]
    if policy == "center_crop":
        scale = min(w / width, h / height)
        cw, ch = round(width * scale), round(height * scale)
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        image = image[y0 : y0 + ch, x0 : x0 + cw]
        h, w = ch, cw
    elif policy == "letterbox":
        scale = min(width / w, height / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = out if out is not None else np.empty((height, width, 3), np.uint8)
        canvas[...] = 0
        x0, y0 = (width - nw) // 2, (height - nh) // 2
        canvas[y0 : y0 + nh, x0 : x0 + nw] = _resize_raw(image, nw, nh, None, scratch)
        return canvas
    elif policy != "stretch":
        raise ValueError(f"unknown resize policy {policy!r}: stretch, center_crop or letterbox")
    if (h, w) == (height, width):
        if out is None:
            return image
        out[...] = image
        return out
    return _resize_raw(image, width, height, out, scratch)


def halve(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """One Gaussian-pyramid step: blur with a 5x5 binomial kernel, keep every other pixel
    (odd sizes round up). A 2x2 box average costs a third of this (74 against 238 µs for
    640x480 here), but the flagship, trained through this function, lost 2 of its 245
    validation photos with it and a retrain on box-halved images did no better."""
    return cv2.pyrDown(image, dst=out)


def _resize_raw(image: np.ndarray, width: int, height: int, out: np.ndarray | None = None,
                scratch: dict | None = None):
    while image.shape[1] >= 2 * width and image.shape[0] >= 2 * height:
        shape = ((image.shape[0] + 1) // 2, (image.shape[1] + 1) // 2, *image.shape[2:])
        buf = None
        if scratch is not None:
            buf = scratch.get(shape)
            if buf is None:
                buf = scratch[shape] = np.empty(shape, image.dtype)
        image = halve(image, buf)
    if image.shape[:2] == (height, width):
        if out is None:
            return image.copy() if scratch is not None else image
        out[...] = image
        return out
    if out is not None:
        cv2.resize(image, (width, height), dst=out, interpolation=cv2.INTER_LINEAR)
        return out
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def quantize_input(rgb: np.ndarray, dtype: np.dtype, out: np.ndarray | None = None) -> np.ndarray:
    """Map uint8 RGB 0..255 into the model's input tensor type.

    Edge TPU classifiers (Coral's and ours) take the raw pixel as the quantized value:
    their input quantization is chosen so that byte 0..255 means exactly what the
    network was trained on, so uint8 is a plain copy (pycoral's classify_image feeds
    pixels straight in for the same reason). An int8 input is the same bytes shifted
    by 128; a float input gets the pixel value (our models scale inside the graph).
    """
    dtype = np.dtype(dtype)
    if out is None:
        out = np.empty(rgb.shape, dtype)
    if dtype == np.uint8 and rgb.dtype == np.uint8 and rgb.shape == out.shape \
            and rgb.flags.c_contiguous and out.flags.c_contiguous:
        # A plain memcpy that keeps the GIL (~10 µs for 224x224x3). numpy's copy lets the
        # GIL go for big arrays, and getting it back can cost the frame loop up to the
        # switch interval (5 ms) while another thread runs Python.
        memoryview(out).cast("B")[:] = memoryview(rgb).cast("B")
    elif dtype == np.uint8:
        np.copyto(out, rgb)
    elif dtype == np.int8:
        # uint8 -> int8 by flipping the top bit == subtracting 128, with no temporary.
        np.bitwise_xor(rgb, 0x80, out=out.view(np.uint8))
    else:
        np.copyto(out, rgb, casting="unsafe")
    return out


def dequantize(raw: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Quantized output tensor -> float scores (as pycoral's classify.get_scores)."""
    raw = np.asarray(raw).reshape(-1)
    if raw.dtype.kind == "f" or not scale:  # (np.issubdtype costs more than the rest)
        return raw.astype(np.float32, copy=False)
    return (raw.astype(np.float32) - zero_point) * np.float32(scale)


def top_k(
    scores: np.ndarray, labels: tuple[str, ...], k: int, min_score: float = 0.0
) -> tuple[Class, ...]:
    """The k best classes with score ≥ min_score, best first; ties keep the lower id."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return ()
    if scores.shape[0] <= 64:  # a stable sort keeps the lower id first on ties
        idx = np.argsort(-scores, kind="stable")[:k]
    else:  # argpartition is O(n): cheap even for ImageNet's 1001 classes
        idx = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(k)
        idx = idx[np.lexsort((idx, -scores[idx]))]
    return tuple(
        Class(int(i), labels[i] if i < len(labels) else str(int(i)), float(scores[i]))
        for i in idx
        if scores[i] >= min_score
    )
