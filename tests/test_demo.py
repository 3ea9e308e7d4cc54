"""`make demo`'s runner: broker, replay, daemon and subscriber on one machine."""

import subprocess
import sys

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
