"""A stop that signals the whole process group (systemd's default KillMode=control-group,
Ctrl-C in a terminal) reaches the inference worker too: it must leave the stop to the
daemon, so the daemon exits cleanly without a false "worker is gone ... restarting it"."""

from __future__ import annotations

import os
import signal
import subprocess

from device.tools.synthetic import write_sequence

from .conftest import PYTHON, ROOT, Recorder, write_config

DEMO = ROOT / "compiled_models" / "demo-notes"


def test_sigterm_to_the_process_group_stops_cleanly(tmp_path, broker):
    replay = tmp_path / "replay"
    write_sequence(replay, ["note_5", "note_10"], gap=2, frames_per_object=3, seed=4)
    cfg = write_config(tmp_path / "grp.toml",
                       camera={"type": "replay", "source": str(replay), "fps": 30,
                               "loop": True},
                       model={"path": str(DEMO), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "grp"},
                       decision={"mode": "stream"})
    log = tmp_path / "grp.log"
    rec = Recorder(broker.port, "coral-classifier/grp/result")
    # its own process group, as systemd gives a service: the group signal hits only it
    proc = subprocess.Popen([PYTHON, "-m", "device", "run", "--config", str(cfg)], cwd=ROOT,
                            stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        # frames are in flight to the worker when the signal lands
        rec.wait_for(lambda r: len(r.on("/result")) >= 5, 60, "results from the daemon")
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(20)
    finally:
        rec.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    text = log.read_text()
    assert code == 0, text[-2000:]
    assert "restarting it" not in text and "worker is gone" not in text, text[-2000:]
    assert "inference worker killed" not in text, text[-2000:]


def test_the_unit_signals_the_daemon_only():
    unit = (ROOT / "systemd" / "coral-classifier.service").read_text()
    assert "\nKillMode=mixed\n" in unit
