"""A libedgetpu that crashes the process when its delegate is created - what Coral's
16.0 build does inside a newer TFLite runtime (google-coral/edgetpu#812, #821) - must
never take the daemon down: a clear exit 4 naming the pairing problem, or with
allow_cpu_fallback a logged fallback to the CPU. The stand-in is a real shared library
built here with the plugin entry points ai_edge_litert's load_delegate() calls
(tflite_plugin_create_delegate / _destroy_delegate), checked against
ai_edge_litert/interpreter.py; creating the delegate dereferences NULL (SIGSEGV)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from device.tools.synthetic import write_sequence

from .conftest import ROOT, Recorder, write_config

FAKE = r"""
#include <stddef.h>
void *tflite_plugin_create_delegate(char **keys, char **values, size_t n,
                                    void (*report_error)(const char *)) {
    volatile int *p = NULL;
    *p = 42;  /* what a libedgetpu built for another TensorFlow does, in effect */
    return NULL;
}
void tflite_plugin_destroy_delegate(void *delegate) {}
"""


@pytest.fixture(scope="module")
def crashing_libedgetpu(tmp_path_factory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build the crashing libedgetpu stand-in (apt install gcc)")
    d = tmp_path_factory.mktemp("libedgetpu")
    (d / "fake.c").write_text(FAKE)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(d / "libedgetpu.so.1"),
                    str(d / "fake.c")], check=True)
    return d


def config(tmp_path: Path, port: int, **model) -> Path:
    replay = tmp_path / "replay"
    write_sequence(replay, ["note_5"], gap=2, frames_per_object=3, seed=8)
    return write_config(
        tmp_path / "c.toml",
        camera={"type": "replay", "source": str(replay), "fps": 20},
        model={"path": str(ROOT / "compiled_models" / "demo-notes" / "model_quant.tflite"),
               "labels": str(ROOT / "compiled_models" / "demo-notes" / "labels.txt"),
               **model},
        mqtt={"host": "127.0.0.1", "port": port, "device_id": "crash"})


def test_segfaulting_delegate_gives_exit_4_with_pairing_advice(tmp_path, broker,
                                                              daemon_factory,
                                                              crashing_libedgetpu):
    d = daemon_factory(config(tmp_path, broker.port, backend="edgetpu"),
                       env={"LD_LIBRARY_PATH": str(crashing_libedgetpu)})
    assert d.proc.wait(60) == 4, d.output()
    out = d.output()
    assert "SIGSEGV" in out and "libedgetpu built for another TensorFlow" in out, out
    assert "Traceback" not in out


def test_segfaulting_delegate_falls_back_to_the_cpu_when_allowed(tmp_path, broker,
                                                                 daemon_factory,
                                                                 crashing_libedgetpu):
    rec = Recorder(broker.port, "coral-classifier/crash/#")
    d = daemon_factory(config(tmp_path, broker.port, backend="auto", allow_cpu_fallback=True),
                       env={"LD_LIBRARY_PATH": str(crashing_libedgetpu)})
    try:
        rec.wait_for(lambda r: r.json_on("/result"), 60, "results on the CPU")
        assert rec.json_on("/result")[-1]["backend"] == "cpu"
        assert "falling back to the CPU" in d.output()
        assert d.proc.poll() is None
    finally:
        rec.close()
