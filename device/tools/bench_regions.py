"""`make bench`'s regions-and-gating part: what [[camera.roi]] and [trigger] cost per
camera frame, measured through the whole daemon (device/tools/bench.py runs it)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

THREE_ROIS = ({"name": "a", "x": 0.0, "y": 0.0, "width": 0.4, "height": 0.5},
              {"name": "b", "x": 0.5, "y": 0.0, "width": 0.4, "height": 0.5},
              {"name": "c", "x": 0.3, "y": 0.5, "width": 0.4, "height": 0.5})


def bench_regions(args: argparse.Namespace, model: Path, frames: Path, still: Path,
                  port: int, threads: int, run_daemon: Callable) -> dict:
    """What regions and gating cost: CPU per camera frame with the whole frame, 1 and 3
    regions (each region is an inference), and per frame of a still scene under motion
    gating (no inference at all)."""
    out = {}
    for name, rois in (("whole frame", ()), ("1 region", THREE_ROIS[:1]),
                       ("3 regions", THREE_ROIS)):
        w = run_daemon(model, args.backend, frames, port, args.seconds, 1000.0, False,
                       threads, rois=rois)
        out[name] = {"camera_fps": round(w.seen / w.seconds, 1),
                     "inferences_per_frame": round(w.frames / max(1, w.seen), 2),
                     "cpu_ms_per_camera_frame": round(w.cpu_s / max(1, w.seen) * 1e3, 3)}
    w = run_daemon(model, args.backend, still, port, args.seconds, 1000.0, False, threads,
                   trigger={"mode": "motion", "hold_frames": 0})
    out["motion-gated still scene"] = {
        "camera_fps": round(w.seen / w.seconds, 1),
        "classified_frames": w.frames,
        "cpu_ms_per_gated_frame": round(w.cpu_s / max(1, w.seen) * 1e3, 4)}
    return out
