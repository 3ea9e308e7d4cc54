"""The architecture the README draws: device never needs host_training or TensorFlow, and
modules stay small enough to hold in one's head."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE = ROOT / "device"
MAX_LINES = 320

BLOCKER = """
import importlib, importlib.abc, pkgutil, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("host_training", "tensorflow", "keras"):
            raise ImportError(f"device must not import {name}")
        return None
sys.meta_path.insert(0, Block())
import device
names = [m.name for m in pkgutil.walk_packages(device.__path__, "device.")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def device_modules() -> list[Path]:
    return sorted(p for p in DEVICE.rglob("*.py"))


def test_every_device_module_imports_without_host_training_or_tensorflow():
    out = subprocess.run([sys.executable, "-c", BLOCKER], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip()) == len(device_modules()) - 1  # minus device/__init__.py


def test_device_modules_stay_small():
    big = {str(p.relative_to(ROOT)): n for p in device_modules()
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"split these modules (over {MAX_LINES} lines): {big}"


def test_subpackages_depend_one_way():
    """cameras and mqtt never reach into the daemon; tools may use everything."""
    for sub, forbidden in (("cameras", ("device.daemon", "device.mqtt", "device.tools")),
                           ("mqtt", ("device.daemon", "device.tools", "device.cameras"))):
        for p in (DEVICE / sub).glob("*.py"):
            text = p.read_text()
            for f in forbidden:
                assert f"from {f}" not in text and f"import {f}" not in text, (p, f)
