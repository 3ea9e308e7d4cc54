"""`make demo`'s runner: broker, replay, daemon and subscriber on one machine."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT


def run_demo(tmp_path, *args):
    bundle = ROOT / "compiled_models" / "demo-notes"
    assert (bundle / "manifest.json").is_file(), "the demo bundle must be committed"
    r = subprocess.run([sys.executable, "-m", "device.tools.demo", "--seconds", "8", "--fps", "10",
                        "--workdir", str(tmp_path), *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "availability   online" in r.stdout
    assert r.stdout.rstrip().splitlines()[-2].startswith("availability   stopped")
    return r.stdout.splitlines()


def test_demo_events_one_per_note(tmp_path):
    lines = run_demo(tmp_path)
    events = [line.split()[1] for line in lines if line.startswith("event")]
    # the replay passes note_5, note_10, note_20 between empty-slot frames, 6 frames each
    assert events[:3] == ["note_5", "note_10", "note_20"], lines
    assert "unknown" not in events and "empty" not in events
    assert any(line.startswith("counts") and "note_5=" in line for line in lines)


def test_demo_stream_mode(tmp_path):
    lines = run_demo(tmp_path, "--mode", "stream")
    labels = {line.split()[2] for line in lines if line.startswith("result")}
    assert {"empty", "note_5", "note_10", "note_20"} <= labels, labels


def test_demo_prints_one_raw_topic_with_its_json(tmp_path):
    lines = run_demo(tmp_path)
    raw = [ln for ln in lines if ln.startswith("coral-classifier/demo/event {")]
    assert len(raw) == 1, lines
    payload = json.loads(raw[0].split(" ", 1)[1])
    assert payload["device_id"] == "demo" and payload["seq"] >= 1
    assert any(ln.startswith("watch the raw topics yourself: mosquitto_sub") for ln in lines)


def _ctrl_c_demo(tmp_path, at: str) -> tuple[subprocess.Popen, list[str]]:
    """Run the demo until a line starting with `at`, then Ctrl-C it as a terminal does
    (SIGINT to the whole foreground process group); the exited process and every line."""
    proc = subprocess.Popen([sys.executable, "-m", "device.tools.demo", "--fps", "10",
                             "--workdir", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith(at):
                break
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc, lines + out.splitlines()


def test_ctrl_c_stops_the_daemon_before_the_broker(tmp_path):
    """Ctrl-C in a terminal signals the whole foreground process group: the daemon must
    still stop while the broker lives, so no reconnect warning ends the output."""
    proc, lines = _ctrl_c_demo(tmp_path, "event")
    assert proc.returncode == 0, lines[-20:]
    assert lines[-1].startswith("demo finished (daemon exit code 0)"), lines[-20:]
    stopped = max(i for i, ln in enumerate(lines) if ln.startswith("availability   stopped"))
    after = lines[stopped:]
    assert not any(w in ln.lower() for ln in after for w in ("reconnect", "connection lost",
                                                              "disconnected", "error")), after


def _left_running(marker: str) -> list[str]:
    """Command lines of live processes that mention `marker` (the demo's workdir)."""
    found = []
    for p in Path("/proc").iterdir():
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if p.name.isdigit() and marker in cmd:
            found.append(cmd)
    return found


def test_ctrl_c_while_starting_leaves_nothing_running(tmp_path):
    """Ctrl-C right after the broker starts (while the printer connects and the daemon is
    spawned): the demo still takes down what it started — a daemon or broker left in its
    own session would run on and hold the terminal's output open."""
    proc, lines = _ctrl_c_demo(tmp_path, "broker on")
    assert proc.returncode == 0, lines[-20:]
    assert lines[-1].startswith("demo finished"), lines[-20:]
    assert _left_running(str(tmp_path)) == []
