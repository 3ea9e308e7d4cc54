"""`make demo` installs what the device needs, not the trainer's TensorFlow."""

from __future__ import annotations

import shutil
import subprocess
import tomllib

import pytest

from .conftest import ROOT


def test_demo_builds_a_device_only_venv_unless_a_full_one_exists(tmp_path):
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    fresh = subprocess.run(["make", "-n", "demo", f"VENV={tmp_path / 'none'}"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout
    assert '.venv-demo/bin/pip install --quiet -e ".[device]"' in fresh
    assert "train" not in fresh and ".venv-demo/bin/python -m device.tools.demo" in fresh
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / ".installed").touch()
    reuse = subprocess.run(["make", "-n", "demo", f"VENV={tmp_path / 'full'}"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout
    assert ".venv-demo" not in reuse and f"{tmp_path / 'full'}/bin/python -m device" in reuse


def test_the_device_extra_has_no_trainer_dependencies():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    device = " ".join(extras["device"]).lower()
    assert "tensorflow" not in device and "matplotlib" not in device
    assert any(d.startswith("tqdm") for d in extras["train"])
