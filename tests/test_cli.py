"""The command line as a person meets it: one-line errors without log prefixes, the right
words for a missing file or a folder, advice that fits the machine, checks that look at
what the config points at, and exit codes as documented."""

from __future__ import annotations

import re
import shutil

import cv2
import numpy as np

from device.tools.demo import free_port
from device.tools.doctor_checks import compile_advice

from .conftest import ROOT, run_cli, write_config

DEMO = ROOT / "compiled_models" / "demo-notes"
PREFIX = re.compile(r"^\d{4}-\d\d-\d\d|\b(INFO|ERROR|WARNING) device")


def one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert not PREFIX.search(lines[0]) and "Traceback" not in stderr, lines[0]
    return lines[0]


def config(tmp_path, **model) -> str:
    return str(write_config(tmp_path / "c.toml", camera={"type": "replay",
                                                         "source": str(tmp_path)},
                            model={"path": str(DEMO), "backend": "cpu", **model},
                            mqtt={"host": "127.0.0.1", "port": free_port()}))


def test_check_config_loads_the_model_and_says_no_such_file(tmp_path):
    r = run_cli("check-config", config(tmp_path, path="/nonexistent"), timeout=60)
    assert r.returncode == 2
    assert "no such file" in one_line_error(r.stderr)
    ok = run_cli("check-config", config(tmp_path), timeout=60)
    assert ok.returncode == 0 and "demo-notes" in ok.stdout, ok.stderr
    broken = tmp_path / "broken"
    shutil.copytree(DEMO, broken)
    (broken / "labels.txt").write_text("only_one\n")
    r = run_cli("check-config", config(tmp_path, path=str(broken)), timeout=60)
    assert r.returncode == 3, r.stderr
    one_line_error(r.stderr)


def test_classify_a_missing_file_and_a_folder(tmp_path):
    photos = tmp_path / "photos" / "inner"
    photos.mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(photos / f"{i}.png"), np.full((64, 64, 3), 40 * i, np.uint8))
    (photos / "notes.txt").write_text("not an image")
    r = run_cli("classify", "--model", str(DEMO), "--backend", "cpu",
                str(tmp_path / "photos"), str(tmp_path / "nope.jpg"), timeout=120)
    assert r.returncode == 1
    assert r.stdout.count("[accepted") + r.stdout.count("[rejected") == 2, r.stdout
    assert "notes.txt" not in r.stdout + r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: {tmp_path / 'nope.jpg'}: no such file; skipped"], r.stderr


def test_edgetpu_without_a_compiled_model_advises_the_cpu(tmp_path):
    r = run_cli("classify", "--model", str(DEMO), "--backend", "edgetpu", str(tmp_path),
                timeout=60)
    assert r.returncode == 3
    assert "--backend cpu" in one_line_error(r.stderr)
    r = run_cli("classify", "--model", str(tmp_path / "none"), str(tmp_path), timeout=60)
    assert r.returncode == 3 and "no such file" in one_line_error(r.stderr)


def test_doctor_reads_the_installed_config_by_default(tmp_path):
    cfg = config(tmp_path)
    r = run_cli("doctor", timeout=120, env={"CORAL_CLASSIFIER_CONFIG": cfg})
    assert f"✔ config: {cfg} (the installed config" in r.stdout, r.stdout
    assert "✘ broker:" in r.stdout  # checked: nothing listens on that port
    assert "✔ model: demo-notes" in r.stdout
    r = run_cli("doctor", timeout=120,
                env={"CORAL_CLASSIFIER_CONFIG": str(tmp_path / "absent.toml")})
    assert "! config:" in r.stdout and "only this machine is checked" in r.stdout
    assert "broker:" not in r.stdout


def test_compile_advice_fits_the_machine():
    assert "coral-train compile /m" in compile_advice("/m", "x86_64")
    pi = compile_advice("/m", "aarch64")
    assert "coral-train" not in pi and "x86-64 workstation" in pi and "make deploy" in pi


def test_fleet_exits_6_when_the_broker_is_unreachable():
    from device.errors import BrokerError, CameraError

    assert BrokerError.exit_code == 6 != CameraError.exit_code
    assert "6 MQTT broker unreachable" in run_cli("--help", timeout=60).stdout
    r = run_cli("fleet", "--broker", f"127.0.0.1:{free_port()}", timeout=60,
                module="host_training")
    assert r.returncode == 6
    assert one_line_error(r.stderr).startswith("error: cannot reach the broker")
    r = run_cli("fleet", "--broker", "nohostport", timeout=60, module="host_training")
    assert r.returncode == 2 and "host:port" in one_line_error(r.stderr)
