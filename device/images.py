"""Image files in, RGB uint8 out: one decoder shared by the replay camera, classify and training."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def decode_image(path: Path) -> np.ndarray | None:
    """Decode an image file to RGB uint8, or None when it is not a readable image."""
    data = np.fromfile(str(path), np.uint8) if path.is_file() else None
    if data is None or data.size == 0:
        return None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
