"""What the benchmarks run on: the default model and synthetic 640x480 frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def default_model() -> Path:
    flagship = ROOT / "compiled_models" / "banknotes-vnd"
    return flagship if flagship.is_dir() else ROOT / "compiled_models" / "demo-notes"


def make_frames(folder: Path, n: int, width: int, height: int) -> None:
    import cv2

    from device.tools.synthetic import CLASSES, render

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgb = render(CLASSES[i % len(CLASSES)], rng, width, height)
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
