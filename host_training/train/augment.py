"""Augmentation for a note seen by another camera: pure numpy + OpenCV, one image at a time.

Geometric (quarter turns, rotation, zoom, shift and a perspective tilt in one warp),
the note pasted onto other backgrounds, and what a different camera or light does to
colours: exposure, contrast, white balance, glare, blur (focus and motion), sensor noise
and JPEG artefacts. Used for the cached features and for fine-tuning alike.
"""

from __future__ import annotations

import cv2
import numpy as np

from host_training.train.settings import Augment


def _warp(img: np.ndarray, a: Augment, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jitter = rng.uniform(-a.perspective, a.perspective, (4, 2)) * [w, h]
    dst = src + jitter.astype(np.float32)
    centre = np.float32([w / 2, h / 2])
    angle = np.deg2rad(rng.uniform(-a.rotation, a.rotation) * 360)
    scale = rng.uniform(1 - a.zoom, 1 + a.zoom)
    rot = np.float32([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * scale
    shift = rng.uniform(-a.translate, a.translate, 2) * [w, h]
    dst = (dst - centre) @ rot.T + centre + shift.astype(np.float32)
    m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    return cv2.warpPerspective(img, m, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)


def paste(note: np.ndarray, aspect: float, background: np.ndarray,
          rng: np.random.Generator) -> np.ndarray:
    """The note (stretched to a square crop; `aspect` is its true width/height) put back at
    its aspect onto `background` at a random size, place and tilt."""
    h, w = background.shape[:2]
    width = rng.uniform(0.55, 0.95) * w
    height = min(width / max(aspect, 0.2), 0.95 * h)
    width = min(width, height * aspect) if aspect > 0 else width
    cx, cy = rng.uniform(width / 2, w - width / 2), rng.uniform(height / 2, h - height / 2)
    angle = np.deg2rad(rng.uniform(-25, 25))
    corners = np.float32([[-width, -height], [width, -height], [width, height],
                          [-width, height]]) / 2
    corners += rng.uniform(-0.06, 0.06, (4, 2)).astype(np.float32) * [width, height]
    rot = np.float32([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = corners @ rot.T + np.float32([cx, cy])
    nh, nw = note.shape[:2]
    src = np.float32([[0, 0], [nw, 0], [nw, nh], [0, nh]])
    m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    warped = cv2.warpPerspective(note, m, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full((nh, nw), 255, np.uint8), m, (w, h))
    mask = cv2.GaussianBlur(mask, (3, 3), 0).astype(np.float32)[..., None] / 255
    shadow = 1 - 0.25 * cv2.GaussianBlur(mask, (0, 0), 6)[..., None] * (1 - mask)
    out = background.astype(np.float32) * shadow * (1 - mask) + warped * mask
    return np.clip(out, 0, 255).astype(np.uint8)


def _photometric(img: np.ndarray, a: Augment, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32)
    if a.white_balance:
        x *= rng.uniform(1 - a.white_balance, 1 + a.white_balance, 3).astype(np.float32)
    if a.contrast:
        mean = x.mean()
        x = (x - mean) * rng.uniform(1 - a.contrast, 1 + a.contrast) + mean
    if a.brightness:
        x *= rng.uniform(1 - a.brightness, 1 + a.brightness)  # exposure
        x += rng.uniform(-0.3, 0.3) * a.brightness * 255
    if a.glare and rng.random() < a.glare:
        h, w = img.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        sx, sy = rng.uniform(0.05, 0.3) * w, rng.uniform(0.05, 0.3) * h
        blob = np.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2) / 2)
        x += blob[..., None] * rng.uniform(80, 220)
    x = np.clip(x, 0, 255)
    if a.blur and rng.random() < a.blur:
        if rng.random() < 0.5:
            x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.6, 2.0))
        else:
            k = int(rng.integers(3, 10))
            kernel = np.zeros((k, k), np.float32)
            kernel[k // 2] = 1.0 / k
            rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0, 180), 1)
            kernel = cv2.warpAffine(kernel, rot, (k, k))
            x = cv2.filter2D(x, -1, kernel / max(kernel.sum(), 1e-6))
    if a.noise:
        x += rng.normal(0, rng.uniform(0, a.noise), x.shape).astype(np.float32)
    out = np.clip(x, 0, 255).astype(np.uint8)
    if a.jpeg and rng.random() < a.jpeg:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 85))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def augment(img: np.ndarray, a: Augment, rng: np.random.Generator,
            background: np.ndarray | None = None, aspect: float = 0.0) -> np.ndarray:
    """One augmented copy of an HxWx3 uint8 image (the same size).

    background: when given (a note crop and `a.paste` drawn), the crop is pasted onto it
    at its true `aspect` instead of filling the frame.
    """
    x = img
    if background is not None and aspect > 0:
        x = paste(x, aspect, background, rng)
    if a.rot90:
        x = np.rot90(x, int(rng.integers(0, 4)))
    if a.flip and rng.random() < 0.5:
        x = x[:, ::-1]
    x = np.ascontiguousarray(x)
    if a.rotation or a.zoom or a.translate or a.perspective:
        x = _warp(x, a, rng)
    return _photometric(x, a, rng)


def augment_batch(images: np.ndarray, a: Augment, rng: np.random.Generator,
                  kinds: list[str] | None = None, aspects: np.ndarray | None = None,
                  backgrounds: np.ndarray | None = None) -> np.ndarray:
    """augment() over a batch; note crops (kind 'crop', and 'foreign': a real note that is not
    ours, so that a tight crop is no cue to refuse it) are pasted onto a random background
    with probability `a.paste` when backgrounds are given."""
    out = np.empty_like(images)
    for i, img in enumerate(images):
        bg = None
        if (kinds is not None and kinds[i] in ("crop", "foreign") and backgrounds is not None
                and len(backgrounds) and rng.random() < a.paste):
            bg = backgrounds[int(rng.integers(0, len(backgrounds)))]
        asp = float(aspects[i]) if aspects is not None and bg is not None else 0.0
        out[i] = augment(img, a, rng, bg, asp)
    return out
