"""doctor's Raspberry Pi checks: the libedgetpu / interpreter pairing, numpy 2 shadowing
Bookworm's simplejpeg, and what a PCIe Coral on a Pi 5 needs."""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from device.tools.doctor import check_pi5_pcie
from device.tools.pairing import check_pairing, interpreter_tf, libedgetpu_tf

from .conftest import run_cli


@pytest.mark.parametrize("version,tf", [("16.0", "2.5"), ("16.0-1", "2.5"),
                                        ("16.0tf2.17.1-1", "2.17"), ("16.0tf2.18.1-1", "2.18"),
                                        ("15.0", None), ("", None)])
def test_libedgetpu_tensorflow_from_its_package_version(version, tf):
    assert libedgetpu_tf(version) == tf


def test_pairings():
    ok = check_pairing("16.0tf2.17.1-1", {"tflite_runtime": "2.17.1"})
    assert ok.ok and "TF 2.17" in ok.detail
    coral = check_pairing("16.0", {"tflite_runtime": "2.5.0.post1"})
    assert coral.ok  # Coral's own stack (the container route)
    crash = check_pairing("16.0", {"tflite_runtime": "2.14.0", "ai_edge_litert": "2.3.0"})
    assert not crash.ok and "crashes" in crash.detail and "16.0tf2.17.1" in crash.fix
    litert = check_pairing("16.0", {"ai_edge_litert": "2.3.0"})
    assert not litert.ok and "LiteRT#3611" in litert.detail
    assert "Never apt install python3-pycoral on Bookworm" in litert.fix
    assert interpreter_tf("ai_edge_litert", "2.3.0") is None


def test_pi5_without_apex_gets_page_size_overlay_and_gasket_advice(tmp_path):
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_text("Raspberry Pi 5 Model B Rev 1.0")
    c = check_pi5_pcie(tmp_path, page_size=16384, kernel="6.12.25+rpt-rpi-2712")
    assert c is not None and "kernel=kernel8.img" in c.fix and "#6799" in c.fix
    assert "pcie-32bit-dma" in c.fix
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "apex_0").write_text("")
    assert check_pi5_pcie(tmp_path, page_size=4096, kernel="6.6.51") is None
    (tmp_path / "proc" / "device-tree" / "model").write_text("Raspberry Pi 4 Model B")
    assert check_pi5_pcie(tmp_path) is None


def test_doctor_names_numpy_2_shadowing_simplejpeg(tmp_path):
    """A Bookworm-like stand-in: picamera2 imports simplejpeg, whose C extension was built
    against numpy 1 and refuses numpy 2 at import with the ValueError users report
    (raspberrypi/picamera2#1088); numpy 2 is what this venv has."""
    import numpy

    assert int(numpy.__version__.split(".")[0]) >= 2, "this check needs numpy 2 in the venv"
    site = tmp_path / "dist-packages"
    (site / "simplejpeg").mkdir(parents=True)
    (site / "simplejpeg" / "__init__.py").write_text(textwrap.dedent('''
        import numpy
        if int(numpy.__version__.split(".")[0]) >= 2:  # the ABI check of a numpy-1 build
            raise ValueError("numpy.dtype size changed, may indicate binary "
                             "incompatibility. Expected 96 from C header, got 88 from "
                             "PyObject")
    '''))
    (site / "picamera2").mkdir()
    (site / "picamera2" / "__init__.py").write_text("import simplejpeg\nclass Picamera2: ...\n")
    r = run_cli("doctor", "--json", env={"PYTHONPATH": str(site) + os.pathsep +
                                         os.environ.get("PYTHONPATH", "")})
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    cam = checks["picamera2"]
    assert "numpy" in cam["detail"] and "simplejpeg" in cam["detail"], cam
    assert "numpy<2" in cam["fix"] + cam["detail"]
    assert "reinstall" not in cam["fix"]
