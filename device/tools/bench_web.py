"""`make bench-web`: what the web page costs per frame when nobody is watching.

1. the per-frame code it adds, alone: the results thread's tap (a reference to the newest
   frame kept) timed over many calls, next to the same loop with no taps (web disabled);
2. the real daemon (replay camera → worker → MQTT to a local mosquitto) in alternating
   windows with [web] off and on (the page served, no viewer): CPU seconds per frame of the
   daemon and its inference worker, the median of each, and their difference.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from device.cameras.base import Frame
from device.config import parse_config
from device.daemon.lifecycle import Daemon
from device.tools.bench import process_cpu
from device.tools.benchdata import default_model, make_frames
from device.tools.demo import free_port, start_broker
from device.web.live import LiveHub


def tap_cost(n: int = 200_000) -> dict[str, float]:
    """Nanoseconds per frame of the results thread's tap loop, web off (no taps) and on."""
    hub = LiveHub()
    frame = Frame(np.zeros((480, 640, 3), np.uint8), time.time(), 1, 1.0)
    c = SimpleNamespace(top_k=())
    spec = SimpleNamespace(info=lambda: {"name": "m", "version": "1", "sha256": "0" * 64})
    verdict = SimpleNamespace(accepted=True, reason="accepted")
    out = {}
    for name, taps in (("off", ()), ("on", (hub.tap,))):
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                for tap in taps:
                    tap(frame, c, spec, verdict)
            best = min(best, (time.perf_counter() - t0) / n * 1e9)
        out[name] = round(best, 1)
    out["added_ns"] = round(out["on"] - out["off"], 1)
    return out


def thread_cpu(native_id: int | None) -> float:
    """CPU seconds one thread of this process has used (Linux /proc)."""
    if native_id is None:
        return 0.0
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def window(model: Path, frames: Path, port: int, web: bool, seconds: float) -> dict:
    sections = {"web": {"enabled": True, "port": free_port()}} if web else {}
    cfg = parse_config({
        "camera": {"type": "replay", "source": str(frames), "fps": 1000, "loop": True},
        "model": {"path": str(model), "backend": "cpu", "num_threads": 1},
        "mqtt": {"host": "127.0.0.1", "port": port, "device_id": "bench-web",
                 "status_interval": 5.0},
        "log": {"level": "WARNING"}, **sections})
    daemon = Daemon(cfg)
    daemon.setup()
    thread = threading.Thread(target=daemon.run, name="daemon")
    thread.start()
    time.sleep(1.5)  # start-up and warm caches
    worker = daemon.slot.worker.pid
    server = daemon.web.thread.native_id if daemon.web is not None else None
    n0, cpu0, srv0 = daemon.stats.frames, process_cpu(worker), thread_cpu(server)
    time.sleep(seconds)
    n1, cpu1, srv1 = daemon.stats.frames, process_cpu(worker), thread_cpu(server)
    daemon.request_stop()
    thread.join(30)
    n = max(1, n1 - n0)
    return {"frames": n1 - n0, "cpu_ms_per_frame": (cpu1 - cpu0) / n * 1e3,
            "server_thread_ms_per_frame": (srv1 - srv0) / n * 1e3}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(default_model()))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0, help="per window")
    ap.add_argument("--json", default="", help="also write the summary to this file")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    summary: dict = {"tap_ns_per_frame": tap_cost()}
    print(f"tap loop per frame: web off {summary['tap_ns_per_frame']['off']} ns, on "
          f"{summary['tap_ns_per_frame']['on']} ns (+{summary['tap_ns_per_frame']['added_ns']}"
          " ns)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames"
        make_frames(frames, 30, 640, 480)
        broker, port = start_broker(Path(tmp))
        try:
            runs: dict[str, list[dict]] = {"off": [], "on": []}
            for r in range(a.rounds):
                for name in (("off", "on") if r % 2 == 0 else ("on", "off")):
                    w = window(Path(a.model), frames, port, name == "on", a.seconds)
                    runs[name].append(w)
                    print(f"round {r + 1} web {name:3s}: {w['frames']} frames, "
                          f"{w['cpu_ms_per_frame']:.3f} ms CPU per frame", flush=True)
        finally:
            broker.terminate()
            broker.wait(5)
    med = {k: statistics.median(w["cpu_ms_per_frame"] for w in v) for k, v in runs.items()}
    paired = statistics.median(on["cpu_ms_per_frame"] - off["cpu_ms_per_frame"]
                               for on, off in zip(runs["on"], runs["off"], strict=True))
    server = max(w["server_thread_ms_per_frame"] for w in runs["on"])
    summary.update(windows=runs, median_cpu_ms_per_frame=med,
                   added_cpu_ms_per_frame_paired_median=round(paired, 4),
                   server_thread_ms_per_frame_max=round(server, 5))
    print(f"median CPU per frame: web off {med['off']:.3f} ms, on (nobody watching) "
          f"{med['on']:.3f} ms; median of paired differences {paired:+.4f} ms (whole-"
          f"process noise on a shared machine)", flush=True)
    print(f"measured directly: the tap adds {summary['tap_ns_per_frame']['added_ns'] / 1e6:.4f}"
          f" ms per frame on the results thread, the idle server thread "
          f"{server:.5f} ms per frame (at most, over the windows)", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
