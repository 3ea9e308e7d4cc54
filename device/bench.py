"""`make bench`: how fast the daemon is next to the interpreter alone.

1. raw invoke time in a tight loop (median, p95);
2. the real daemon (replay camera → classifier → MQTT to a local mosquitto), unthrottled:
   frames per second, per-stage ms at p50/p95/p99, CPU time per frame outside inference;
3. the same daemon fed like a camera (paced, drop-oldest): frame-to-publish latency;
4. peak RSS. The same command runs on a Pi with `--backend edgetpu`.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from device.bundle import load_bundle
from device.config import parse_config
from device.demo import start_broker
from device.inference import create_classifier
from device.service import Daemon

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("device.bench")


def default_model() -> Path:
    flagship = ROOT / "compiled_models" / "banknotes-vnd"
    return flagship if flagship.is_dir() else ROOT / "compiled_models" / "demo-notes"


def make_frames(folder: Path, n: int, width: int, height: int) -> None:
    import cv2

    from host_training.synthetic import CLASSES, render

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgb = render(CLASSES[i % len(CLASSES)], rng, width, height)
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def raw_invoke(clf, n: int) -> dict:
    """The interpreter alone: invoke() on a filled input, n times."""
    it = clf.interpreter
    it.tensor(clf._input_index)()[0][...] = 128
    for _ in range(10):
        it.invoke()
    times = np.empty(n)
    cpu0 = time.process_time()
    for i in range(n):
        t0 = time.perf_counter()
        it.invoke()
        times[i] = time.perf_counter() - t0
    cpu = (time.process_time() - cpu0) / n
    ms = times * 1e3
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)),
            "fps": float(1e3 / np.median(ms)), "cpu_ms": cpu * 1e3}


def run_daemon(model: Path, backend: str, frames: Path, port: int, seconds: float, fps: float,
               live: bool, num_threads: int) -> tuple[Daemon, float, float]:
    cfg = parse_config({
        "camera": {"type": "replay", "source": str(frames), "fps": fps, "loop": True},
        "model": {"path": str(model), "backend": backend, "allow_cpu_fallback": False,
                  "num_threads": num_threads},
        "mqtt": {"host": "127.0.0.1", "port": port, "device_id": "bench",
                 "status_interval": 5.0},
        "log": {"level": "WARNING"},
    })
    daemon = Daemon(cfg)
    daemon.setup()
    daemon.source.live = live
    warm = 20
    for _ in range(warm):  # fill the replay cache and warm the interpreter
        daemon.classifier.classify(daemon.source.read().image)
    thread = threading.Thread(target=daemon.run, name="daemon")
    cpu0, t0 = time.process_time(), time.perf_counter()
    thread.start()
    time.sleep(seconds)
    daemon.request_stop()
    thread.join(30)
    return daemon, time.perf_counter() - t0, time.process_time() - cpu0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark the daemon's pipeline.")
    ap.add_argument("--model", default=str(default_model()))
    ap.add_argument("--backend", default="cpu", choices=["cpu", "edgetpu"])
    ap.add_argument("--num_threads", "--num-threads", dest="num_threads", type=int, default=2)
    ap.add_argument("--frames", default="", help="replay folder (default: 640x480 synthetic)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--invokes", type=int, default=300)
    ap.add_argument("--camera_fps", "--camera-fps", dest="camera_fps", type=float, default=30.0)
    ap.add_argument("--json", default="", help="also write the summary to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    work = Path(tempfile.mkdtemp(prefix="coral-bench-"))
    frames = Path(args.frames) if args.frames else work / "frames"
    if not args.frames:
        make_frames(frames, 20, 640, 480)
    model = Path(args.model)
    bundle = load_bundle(model)
    clf = create_classifier(bundle, args.backend, num_threads=args.num_threads)
    raw = raw_invoke(clf, args.invokes)
    clf.close()

    broker, port = start_broker(work)
    try:
        d, wall, cpu = run_daemon(model, args.backend, frames, port, args.seconds, 1000.0,
                                  live=False, num_threads=args.num_threads)
        stages = d.times.percentiles()
        fps = d.frames / wall
        outside = (cpu / max(1, d.frames) - raw["cpu_ms"] / 1e3) * 1e3
        lat, _, _ = run_daemon(model, args.backend, frames, port, args.seconds, args.camera_fps,
                               live=True, num_threads=args.num_threads)
        latency = lat.times.percentiles()["latency"]
    finally:
        broker.terminate()
        broker.wait(5)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {
        "model": bundle.name, "backend": args.backend, "frame_size": "640x480",
        "raw_invoke": {k: round(v, 3) for k, v in raw.items()},
        "pipeline": {"fps": round(fps, 2), "frames": d.frames, "stages_ms": stages,
                     "dropped": d.buffer.dropped},
        "fps_ratio": round(fps / raw["fps"], 3),
        "cpu_ms_per_frame_outside_inference": round(outside, 3),
        "latency_ms_at_camera_fps": {"camera_fps": args.camera_fps, **latency,
                                     "p99_over_p50": round(latency["p99"] / latency["p50"], 2),
                                     "dropped": lat.buffer.dropped},
        "peak_rss_mb": round(rss, 1),
    }
    print_table(summary)
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


def print_table(s: dict) -> None:
    r = s["raw_invoke"]
    print(f"\nmodel {s['model']} on {s['backend']}, frames {s['frame_size']}")
    print(f"raw invoke          median {r['median_ms']:.2f} ms  p95 {r['p95_ms']:.2f} ms  "
          f"({r['fps']:.0f} fps, {r['cpu_ms']:.2f} ms CPU)")
    print(f"pipeline            {s['pipeline']['fps']:.1f} fps = {s['fps_ratio']:.2f} x raw")
    print(f"{'stage':<12} {'p50':>8} {'p95':>8} {'p99':>8}  (ms)")
    for name, v in s["pipeline"]["stages_ms"].items():
        print(f"{name:<12} {v['p50']:>8.3f} {v['p95']:>8.3f} {v['p99']:>8.3f}")
    lat = s["latency_ms_at_camera_fps"]
    print(f"frame->publish at {lat['camera_fps']:.0f} fps: p50 {lat['p50']:.2f}  "
          f"p95 {lat['p95']:.2f}  p99 {lat['p99']:.2f} ms (p99/p50 {lat['p99_over_p50']})")
    print(f"CPU outside inference {s['cpu_ms_per_frame_outside_inference']:.2f} ms/frame; "
          f"peak RSS {s['peak_rss_mb']:.0f} MB\n")


if __name__ == "__main__":
    sys.exit(main())
