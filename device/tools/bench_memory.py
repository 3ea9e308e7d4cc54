"""What a running daemon costs in memory: PSS of the daemon and each of its child processes.

The bench's own peak RSS is not the daemon's (it holds a second interpreter for the raw
loops, and RSS counts shared libraries once per process). This starts the real daemon
(`python -m device run`, replay camera, the given model, a local broker), waits until it
has classified frames in steady state, and sums the proportional set size (PSS: shared
pages split between the processes that map them) of the daemon and its children (the
inference worker, multiprocessing's resource tracker when there is one).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pss_kb(pid: int) -> int:
    """The process's PSS in kB (Linux: /proc/<pid>/smaps_rollup)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss line for pid {pid}")


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(c) for c in text]
    return out


def process_name(pid: int) -> str:
    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    if "resource_tracker" in cmd:
        return "resource tracker"
    if "multiprocessing" in cmd or "spawn_main" in cmd or "forkserver" in cmd:
        return "inference worker"
    return cmd[:60]


def daemon_memory(model: Path, frames: Path, port: int, work: Path,
                  settle_frames: int = 150, timeout: float = 120.0) -> dict:
    """PSS in MB of a running daemon and its children, after `settle_frames` frames."""
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "memory.toml"
    cfg.write_text(
        f'[camera]\ntype = "replay"\nsource = "{frames}"\nfps = 30\nloop = true\n'
        f'[model]\npath = "{model}"\nbackend = "cpu"\nnum_threads = 1\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ndevice_id = "bench-memory"\n'
        f'status_interval = 0.5\n[state]\ndir = "{work / "state"}"\n')
    log = (work / "memory.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "device", "run", "--config", str(cfg)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        frames_done = _wait_frames(port, settle_frames, timeout, proc)
        parts = {"daemon": pss_kb(proc.pid)}
        for child in children(proc.pid):
            name = process_name(child)
            parts[name] = parts.get(name, 0) + pss_kb(child)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    total = sum(parts.values())
    return {"frames": frames_done, "pss_mb": {k: round(v / 1024, 1) for k, v in parts.items()},
            "total_pss_mb": round(total / 1024, 1)}


def _wait_frames(port: int, n: int, timeout: float, proc: subprocess.Popen) -> int:
    """Wait until the daemon's status says it classified n frames."""
    import json
    import threading

    import paho.mqtt.client as mqtt

    seen = {"frames": 0}
    done = threading.Event()

    def on_message(client, userdata, msg) -> None:
        try:
            seen["frames"] = int(json.loads(msg.payload).get("frames", 0))
        except (ValueError, AttributeError):
            return
        if seen["frames"] >= n:
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(
        "coral-classifier/bench-memory/status", qos=0)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while not done.wait(0.5):
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited ({proc.returncode}) before "
                                   f"{n} frames: see its log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon classified {seen['frames']} of {n} frames "
                                   f"in {timeout:.0f} s")
    finally:
        client.loop_stop()
        client.disconnect()
    return seen["frames"]


def main() -> int:
    """`python -m device.tools.bench_memory [MODEL]`: the daemon's PSS on its own."""
    import json
    import tempfile

    from device.tools.benchdata import default_model, make_frames
    from device.tools.demo import start_broker

    model = Path(sys.argv[1]) if len(sys.argv) > 1 else default_model()
    work = Path(tempfile.mkdtemp(prefix="coral-bench-memory-"))
    make_frames(work / "frames", 20, 640, 480)
    broker, port = start_broker(work)
    try:
        result = daemon_memory(model, work / "frames", port, work)
    finally:
        broker.terminate()
        broker.wait(5)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
