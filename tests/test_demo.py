"""`make demo`'s runner: broker, replay, daemon and subscriber on one machine."""

import subprocess
import sys

from .conftest import ROOT


def test_demo_runs_and_stops_cleanly(tmp_path):
    bundle = ROOT / "compiled_models" / "demo-notes"
    assert (bundle / "manifest.json").is_file(), "the demo bundle must be committed"
    r = subprocess.run([sys.executable, "-m", "device.demo", "--seconds", "8", "--fps", "10",
                        "--workdir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    results = [line for line in r.stdout.splitlines() if line.startswith("result")]
    assert len(results) >= 10, r.stdout
    labels = {line.split()[2] for line in results}
    # the replay passes every note between empty-slot frames; the model tells them apart
    assert {"empty", "note_5", "note_10", "note_20"} <= labels, labels
    assert "availability   online" in r.stdout
    assert r.stdout.rstrip().splitlines()[-2].startswith("availability   stopped")
