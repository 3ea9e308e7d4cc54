"""`make bench`: how fast the daemon is next to the interpreter alone.

1. raw invoke time in a tight loop (median, p95);
2. the real daemon (replay camera → classifier → MQTT to a local mosquitto), unthrottled,
   measured in steady state (after start-up, before shutdown): frames per second, per-stage
   ms at p50/p95/p99, CPU time per frame outside inference;
3. their ratio, over rounds of raw | pipeline | raw (median round; the faster raw loop of
   each pair is the reference, so a noisy machine cannot flatter it);
4. the same daemon fed like a camera (paced, drop-oldest): frame-to-publish latency;
5. the running daemon's memory: PSS of the daemon and its worker processes.
On the CPU it runs twice: with a core left for the daemon (the shape of a Pi with a Coral,
where inference leaves the CPU) and with every core given to the interpreter. The same
command runs on a Pi with `--backend edgetpu`.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.bundle import load_bundle
from device.config import parse_config
from device.daemon.lifecycle import Daemon
from device.images import decode_image
from device.inference import create_classifier
from device.tools.benchdata import default_model, make_frames
from device.tools.demo import start_broker

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("device.tools.bench")


def raw_invoke(clf, n: int) -> dict:
    """The interpreter alone: invoke() on a filled input, n times. fps is invokes per
    second over the whole loop (a mean, like the pipeline's), not 1/median."""
    it = clf.interpreter
    it.tensor(clf._input_index)()[0][...] = 128
    for _ in range(10):
        it.invoke()
    times = np.empty(n)
    cpu0, start = time.process_time(), time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        it.invoke()
        times[i] = time.perf_counter() - t0
    wall = time.perf_counter() - start
    cpu = (time.process_time() - cpu0) / n
    ms = times * 1e3
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)),
            "fps": n / wall, "cpu_ms": cpu * 1e3}


def best_raw(model: Path, backend: str, num_threads: int, n: int) -> dict:
    """Raw invoke measured on a fresh interpreter (the daemon's is busy)."""
    clf = create_classifier(load_bundle(model), backend, num_threads=num_threads)
    try:
        return raw_invoke(clf, n)
    finally:
        clf.close()


@dataclass(frozen=True)
class Window:
    """The daemon in steady state: start-up (broker connect) and shutdown (flushing the
    queue, the clean MQTT stop) are outside it, as warm-up is outside the raw loop."""

    frames: int
    seconds: float
    cpu_s: float
    stages_ms: dict
    dropped: int
    seen: int = 0  # camera frames (an inference per region, or none when gated)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


def process_cpu(worker_pid: int | None) -> float:
    """CPU seconds of this process plus the inference worker's (it runs the interpreter)."""
    total = time.process_time()
    if worker_pid is not None:
        try:
            fields = Path(f"/proc/{worker_pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def run_daemon(model: Path, backend: str, frames: Path, port: int, seconds: float, fps: float,
               live: bool, num_threads: int, warmup: float = 1.0, rois: tuple = (),
               trigger: dict | None = None) -> Window:
    cfg = parse_config({
        "camera": {"type": "replay", "source": str(frames), "fps": fps, "loop": True,
                   "roi": list(rois)},
        "trigger": trigger or {},
        "model": {"path": str(model), "backend": backend, "allow_cpu_fallback": False,
                  "num_threads": num_threads},
        "mqtt": {"host": "127.0.0.1", "port": port, "device_id": "bench",
                 "status_interval": 5.0},
        "log": {"level": "WARNING"},
    })
    daemon = Daemon(cfg)
    daemon.setup()
    daemon.source.live = live
    for _ in range(20):  # fill the replay cache
        daemon.source.read()
    thread = threading.Thread(target=daemon.run, name="daemon")
    thread.start()
    deadline = time.monotonic() + 30
    while daemon.stats.seen == 0 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(warmup)
    worker = daemon.slot.worker.pid
    n0, s0, first = daemon.stats.frames, daemon.stats.seen, daemon.times.n
    cpu0, t0 = process_cpu(worker), time.perf_counter()
    time.sleep(seconds)
    n1, s1 = daemon.stats.frames, daemon.stats.seen
    cpu1, t1 = process_cpu(worker), time.perf_counter()
    daemon.request_stop()
    thread.join(30)
    return Window(n1 - n0, t1 - t0, cpu1 - cpu0, daemon.times.percentiles(since=first),
                  daemon.buffer.dropped, s1 - s0)


def bench(args: argparse.Namespace, model: Path, frames: Path, port: int,
          threads: int) -> dict:
    """One configuration: rounds of raw | pipeline | raw, then the paced latency run.

    Each pipeline window is compared with the faster of the raw loops around it, so drift
    on a shared machine cannot flatter the ratio; the median round is reported."""

    def raw() -> dict:
        return best_raw(model, args.backend, threads, args.invokes)

    rounds = []
    before = raw()
    for _ in range(args.rounds):
        run = run_daemon(model, args.backend, frames, port, args.seconds, 1000.0,
                         live=False, num_threads=threads)
        after = raw()
        ref = max(before, after, key=lambda r: r["fps"])
        outside = (run.cpu_s / max(1, run.frames) - ref["cpu_ms"] / 1e3) * 1e3
        rounds.append({"raw_fps": [round(before["fps"], 1), round(after["fps"], 1)],
                       "pipeline_fps": round(run.fps, 1),
                       "ratio": round(run.fps / ref["fps"], 3),
                       "cpu_ms_outside": round(outside, 3), "_run": run, "_raw": ref})
        before = after
        gc.collect()  # the round's daemon, its frames and interpreter
    paced = run_daemon(model, args.backend, frames, port, args.seconds, args.camera_fps,
                       live=True, num_threads=threads)
    mid = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
    run, ref = mid["_run"], mid["_raw"]
    latency = paced.stages_ms["latency"]
    return {
        "num_threads": threads,
        "raw_invoke": {k: round(v, 3) for k, v in ref.items()},
        "pipeline": {"fps": round(run.fps, 2), "frames": run.frames,
                     "seconds": round(run.seconds, 2), "stages_ms": run.stages_ms,
                     "dropped": run.dropped},
        "fps_ratio": mid["ratio"],
        "cpu_ms_per_frame_outside_inference": round(float(np.median(
            [r["cpu_ms_outside"] for r in rounds])), 3),
        "rounds": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rounds],
        "latency_ms_at_camera_fps": {"camera_fps": args.camera_fps, **latency,
                                     "p99_over_p50": round(latency["p99"] / latency["p50"], 2),
                                     "dropped": paced.dropped},
    }


def default_threads(backend: str) -> list[int]:
    """On the CPU: all cores but one (the shape of a Pi with a Coral, where the model runs
    elsewhere and the CPU is the daemon's), then every core. On the TPU threads don't
    matter."""
    if backend != "cpu":
        return [1]
    cores = len(os.sched_getaffinity(0))
    return sorted({max(1, cores - 1), cores})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark the daemon's pipeline.")
    ap.add_argument("--model", default=str(default_model()))
    ap.add_argument("--backend", default="cpu", choices=["cpu", "edgetpu"])
    ap.add_argument("--num_threads", "--num-threads", dest="num_threads", default="",
                    help="interpreter threads, comma-separated for several runs "
                         "(default: cores-1 and cores on the CPU)")
    ap.add_argument("--frames", default="", help="replay folder (default: 640x480 synthetic)")
    ap.add_argument("--seconds", type=float, default=5.0, help="per pipeline window")
    ap.add_argument("--rounds", type=int, default=3,
                    help="raw|pipeline|raw rounds; the median ratio is reported")
    ap.add_argument("--invokes", type=int, default=300)
    ap.add_argument("--camera_fps", "--camera-fps", dest="camera_fps", type=float, default=30.0)
    ap.add_argument("--json", default="", help="also write the summary to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        threads = ([int(t) for t in args.num_threads.split(",")] if args.num_threads
                   else default_threads(args.backend))
    except ValueError:
        ap.error(f"--num-threads {args.num_threads!r}: give integers like 1 or 1,2")
    if args.rounds < 1 or any(t < 1 for t in threads):
        ap.error("--rounds and --num-threads must be at least 1")

    summary = measure(args, threads)
    for run in summary["runs"]:
        print_table(summary, run)
    print(f"\nregions and gating ({threads[0]} interpreter thread(s), replay unthrottled):")
    memory = summary["daemon_memory"]
    for name, v in summary["regions"].items():
        print(f"  {name:<26} " + ", ".join(f"{k} {x}" for k, x in v.items()))
    parts = " + ".join(f"{k} {v:.0f}" for k, v in memory["pss_mb"].items())
    print(f"running daemon: PSS {memory['total_pss_mb']:.0f} MB ({parts}); "
          f"this bench process's peak RSS {summary['peak_rss_mb']:.0f} MB\n")
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


def measure(args: argparse.Namespace, threads: list[int]) -> dict:
    """Every measurement against one local broker: the runs per thread count, regions and
    gating, the running daemon's memory."""
    work = Path(tempfile.mkdtemp(prefix="coral-bench-"))
    frames = Path(args.frames) if args.frames else work / "frames"
    if not args.frames:
        make_frames(frames, 20, 640, 480)
    model = Path(args.model)
    bundle = load_bundle(model)
    runs = []
    still = work / "still"
    make_frames(still, 1, 640, 480)  # one frame, replayed: nothing ever moves
    broker, port = start_broker(work)
    try:
        for n in threads:
            runs.append(bench(args, model, frames, port, n))
        from device.tools.bench_regions import bench_regions

        regions = bench_regions(args, model, frames, still, port, threads[0], run_daemon)
        from device.tools.bench_memory import daemon_memory

        memory = daemon_memory(model, frames, port, work / "memory")
    finally:
        broker.terminate()
        broker.wait(5)
    summary = {
        "model": bundle.name, "backend": args.backend, "frames": frame_size(frames),
        "cores": len(os.sched_getaffinity(0)), "runs": runs, "regions": regions,
        # the running daemon (`device run`): PSS of the daemon and its worker processes
        "daemon_memory": memory,
        # the whole bench process: the daemon plus a second interpreter for the raw loops
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    return summary


def frame_size(frames: Path) -> str:
    first = min((p for p in frames.iterdir() if p.is_file()), default=None) \
        if frames.is_dir() else None
    image = decode_image(first) if first is not None else None
    return f"{image.shape[1]}x{image.shape[0]}" if image is not None else str(frames)


def print_table(s: dict, run: dict) -> None:
    r = run["raw_invoke"]
    print(f"\nmodel {s['model']} on {s['backend']}, frames {s['frames']}, "
          f"{run['num_threads']} interpreter thread(s) on {s['cores']} cores")
    print(f"raw invoke          median {r['median_ms']:.2f} ms  p95 {r['p95_ms']:.2f} ms  "
          f"({r['fps']:.0f} fps, {r['cpu_ms']:.2f} ms CPU)")
    print(f"pipeline            {run['pipeline']['fps']:.1f} fps = {run['fps_ratio']:.2f} x raw "
          f"(median of rounds {[x['ratio'] for x in run['rounds']]})")
    print(f"{'stage':<12} {'p50':>8} {'p95':>8} {'p99':>8}  (ms)")
    for name, v in run["pipeline"]["stages_ms"].items():
        print(f"{name:<12} {v['p50']:>8.3f} {v['p95']:>8.3f} {v['p99']:>8.3f}")
    lat = run["latency_ms_at_camera_fps"]
    print(f"frame->publish at {lat['camera_fps']:.0f} fps: p50 {lat['p50']:.2f}  "
          f"p95 {lat['p95']:.2f}  p99 {lat['p99']:.2f} ms (p99/p50 {lat['p99_over_p50']})")
    print(f"CPU outside inference {run['cpu_ms_per_frame_outside_inference']:.2f} ms/frame")


if __name__ == "__main__":
    sys.exit(main())
