"""`make demo`: the whole product on one machine with built-in defaults.

Starts a private mosquitto on a free loopback port, makes a replay sequence of notes
passing a slot (real photos with --photos: `make demo` replays the six banknote photos in
demo/banknotes-vnd through the flagship bundle; else synthetic notes for the small demo
bundle), runs the real daemon (replay camera, CPU backend) with its web page on, and
prints the page's address and what a machine controller would receive. Ctrl-C (or
--seconds) stops everything cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `make demo`'s machine takes notes up to 100,000 VND: 200,000 and 500,000 are refused
# (recognised and handed back), as an operator would switch notes off
DEMO_ACCEPT = ["10000_vnd", "20000_vnd", "50000_vnd", "100000_vnd"]
log = logging.getLogger("device.tools.demo")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"mosquitto did not start on port {port}")


def start_broker(workdir: Path) -> tuple[subprocess.Popen, int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        raise SystemExit("mosquitto is not installed: `sudo apt-get install mosquitto` "
                         "(make demo does this for you)")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    # its own session: Ctrl-C in the terminal reaches the demo alone, which stops the
    # daemon first and the broker last (no "connection lost" as the last word)
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=(workdir / "mosquitto.log").open("w"),
                            start_new_session=True)
    wait_port(port)
    return proc, port


def make_replay(folder: Path) -> None:
    from device.tools.synthetic import NOTES, write_sequence  # numpy + OpenCV only

    if folder.is_dir() and any(folder.iterdir()):
        return
    write_sequence(folder, passes=[*NOTES, *NOTES], gap=5, frames_per_object=6)


def photo_replay(folder: Path, photos: Path, frames_per_photo: int = 6, gap: int = 4) -> None:
    """Each photo held for a few frames, an empty slot (plain grey) between them."""
    import cv2
    import numpy as np

    from device.images import IMAGE_SUFFIXES

    files = sorted(p for p in photos.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no photos in {photos}")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    empty = np.full((480, 640, 3), 90, np.uint8)
    n = 0
    for photo in files:
        for _ in range(gap):
            cv2.imwrite(str(folder / f"{n:04d}_empty.png"), empty)
            n += 1
        for _ in range(frames_per_photo):
            (folder / f"{n:04d}_{photo.name}").write_bytes(photo.read_bytes())
            n += 1


def print_messages(port: int, prefix: str):
    from device.config import MqttConfig
    from device.mqtt.client import guarded, make_client

    raw_shown = []
    gone = threading.Event()  # the daemon said it stopped (or its will said offline)

    def on_message(client, userdata, msg):
        topic = msg.topic.removeprefix(prefix)
        try:
            p = json.loads(msg.payload)
        except ValueError:
            print(f"{topic:14s} {msg.payload.decode(errors='replace')}", flush=True)
            if topic == "availability" and msg.payload in (b"stopped", b"offline"):
                gone.set()
            return
        if topic in ("event", "result") and not raw_shown:
            # once, exactly what a machine controller receives (mosquitto_sub -v prints it so)
            raw_shown.append(topic)
            print(f"-- raw MQTT message (topic, then its JSON payload) --\n{msg.topic} "
                  f"{msg.payload.decode()}\n-- the rest summarised, one line each --",
                  flush=True)
        if topic == "result":
            top = "  ".join(f"{k['label']} {k['score']:.2f}" for k in p["top_k"])
            print(f"{topic:14s} #{p['seq']:<4d} {p['label']:<8s} {p['score']:.2f}   "
                  f"[{top}]  {p['latency_ms']['inference']:.1f} ms", flush=True)
        elif topic == "event":
            verdict = p.get("verdict", "")
            why = f" ({p['reason']})" if p.get("reason") and verdict != "accepted" else ""
            if p.get("guess"):
                why += f", looked most like {p['guess']} {p['guess_score']:.2f}"
            print(f"{topic:14s} {p['label']:<8s} score {p['score']:.2f} over {p['frames']} "
                  f"frames  id {p['event_id'][:8]}"
                  + (f"  {verdict.upper()}{why}" if verdict else ""), flush=True)
        elif topic == "counts":
            print(f"{topic:14s} " + ", ".join(f"{k}={v}" for k, v in p["counts"].items()),
                  flush=True)
        elif topic == "status":
            print(f"{topic:14s} {p['state']} model={p['model']['name']} v{p['model']['version']} "
                  f"backend={p['backend']} fps={p['fps']} frames={p['frames']}", flush=True)
        else:
            print(f"{topic:14s} {json.dumps(p)}", flush=True)

    client = make_client(MqttConfig(host="127.0.0.1", port=port), "demo-controller")
    client.on_connect = guarded(lambda c, u, f, rc, p: c.subscribe(prefix + "#"))
    client.on_message = guarded(on_message)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.user_data_set({"gone": gone})
    return client


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "compiled_models" / "demo-notes"))
    ap.add_argument("--source", default="", help="replay folder (default: generated notes)")
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0 = Ctrl-C)")
    ap.add_argument("--mode", choices=["event", "stream"], default="event",
                    help="event: one event per note passing (default); stream: every frame")
    ap.add_argument("--workdir", default=str(ROOT / ".demo"))
    ap.add_argument("--photos", default="", help="replay these photos (one object each) "
                    "instead of synthetic notes, e.g. demo/banknotes-vnd")
    ap.add_argument("--web_port", "--web-port", dest="web_port", type=int, default=-1,
                    help="the web page's port (default: a free one; 0 = no web page)")
    return ap.parse_args(argv)


def replay_source(args: argparse.Namespace, work: Path) -> Path:
    """The folder the replay camera reads: --photos, --source, or generated notes."""
    source = Path(args.source) if args.source else work / "replay"
    if args.photos:
        source = work / "replay-photos"
        photo_replay(source, Path(args.photos))
    elif not args.source:
        make_replay(source)
    return source


def write_config(args: argparse.Namespace, work: Path, source: Path, port: int,
                 web_port: int) -> Path:
    """The daemon's config: replay camera, CPU backend, the private broker, the web page."""
    web = (f'[web]\nenabled = true\nport = {web_port}\n'
           '[capture]\nkeep_doubtful = true\n') if web_port else ""
    config = work / "demo.toml"
    config.write_text(
        f'[camera]\ntype = "replay"\nsource = "{source}"\nfps = {args.fps}\nloop = true\n'
        f'[model]\npath = "{args.model}"\nbackend = "cpu"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ndevice_id = "demo"\n'
        "status_interval = 5.0\n"
        f'[decision]\nmode = "{args.mode}"\n'
        # the synthetic bundle has an "empty" class; real photos: the bundle's own rule,
        # with an operator's accept list (this demo machine takes notes up to 100,000)
        + (f'accept = {json.dumps(DEMO_ACCEPT)}\n' if args.photos
           else 'background_labels = ["empty"]\n')
        + f'[state]\ndir = "{work / "state"}"\n' + web)
    return config


def announce(port: int, config: Path, web_port: int) -> None:
    print(f"broker on 127.0.0.1:{port}; config {config}; Ctrl-C stops", flush=True)
    print(f"watch the raw topics yourself: mosquitto_sub -h 127.0.0.1 -p {port} "
          f"-t 'coral-classifier/demo/#' -v", flush=True)
    if web_port:
        print(f"web page on http://127.0.0.1:{web_port}/ (live view, events, status; "
              f"/upload classifies a photo, /label labels kept frames)", flush=True)
    if config.read_text().count("accept = "):
        print("this demo machine accepts notes up to 100,000 VND (decision.accept): the "
              "200,000 and 500,000 notes are refused, an untaught 2,000 note and a cat are "
              "unknown", flush=True)


def catch_stop_signals() -> threading.Event:
    """Ctrl-C (SIGINT) and SIGTERM set an event instead of raising KeyboardInterrupt
    wherever the main thread happens to be: raised inside subprocess's own code it could
    skip the cleanup and leave the daemon and the broker running (in their own sessions,
    holding the terminal's output open). A second Ctrl-C changes nothing."""
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    return stopping


def wait_daemon(daemon: subprocess.Popen, seconds: float, stopping: threading.Event) -> int:
    """Until the daemon exits (its exit code), `seconds` pass (0: never) or Ctrl-C."""
    deadline = time.monotonic() + seconds if seconds else None
    while daemon.poll() is None and not stopping.wait(0.2):
        if deadline is not None and time.monotonic() >= deadline:
            break
    return daemon.returncode if daemon.poll() is not None else 0


def stop(daemon: subprocess.Popen | None, sub, broker: subprocess.Popen, rc: int) -> int:
    """The daemon first (SIGTERM; after 15 s its whole process group, inference worker
    included, is killed), then the printer, the broker last."""
    if daemon is not None and daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            rc = daemon.wait(15)
            # still starting, it had no handler yet: ended by the signal, as asked
            rc = 0 if rc == -signal.SIGTERM else rc
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGKILL)  # its own session: pgid == pid
            daemon.wait()
            rc = 1
    if sub is not None:
        # the daemon's last message (availability stopped) must print before the printer
        # goes; a killed daemon sends none, its will says offline: a few seconds at most
        sub.user_data_get()["gone"].wait(5)
        sub.loop_stop()
        sub.disconnect()
    broker.terminate()
    broker.wait(5)
    return rc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


def run(args: argparse.Namespace) -> int:
    """The demo: replay, broker, config, the message printer, the daemon until stopped;
    whatever happens after the broker starts, stop() takes everything down in order."""
    stopping = catch_stop_signals()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    source = replay_source(args, work)
    web_port = free_port() if args.web_port < 0 else args.web_port
    broker, port = start_broker(work)
    daemon = sub = None
    rc = 0
    try:
        config = write_config(args, work, source, port, web_port)
        announce(port, config, web_port)
        sub = print_messages(port, "coral-classifier/demo/")
        daemon = subprocess.Popen([sys.executable, "-m", "device", "run", "--config",
                                   str(config)], cwd=ROOT, start_new_session=True)
        rc = wait_daemon(daemon, args.seconds, stopping)
    finally:
        rc = stop(daemon, sub, broker, rc)
    print(f"demo finished (daemon exit code {rc})"
          + (f"; frames kept for labelling are in {work / 'state'}" if web_port else ""),
          flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
