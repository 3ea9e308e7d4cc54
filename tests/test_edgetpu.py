"""Model inspection, the offline Edge TPU analysis against the compiler's own output,
and the compile wrapper."""

import json
import os
import shutil
import stat

import pytest

from device.bundle import TPU_MODEL, load_bundle
from host_training.compiler import parse_report
from host_training.edgetpu_check import analyse
from host_training.tflite_model import EDGETPU_CUSTOM_OP, load_tflite

from .conftest import CORAL_MODELS, ROOT, run_cli

PAIRS = sorted(CORAL_MODELS.glob("*_edgetpu.tflite")) if CORAL_MODELS.is_dir() else []
DEMO = ROOT / "compiled_models" / "demo-notes"


@pytest.mark.parametrize("compiled", PAIRS, ids=lambda p: p.stem)
def test_prediction_matches_what_the_compiler_left_on_the_cpu(compiled):
    source = compiled.with_name(compiled.name.replace("_edgetpu", ""))
    truth = [op.name for op in load_tflite(compiled).main.ops if op.name != EDGETPU_CUSTOM_OP]
    result = analyse(load_tflite(source))
    predicted = [o["op"] for o in result["ops"] if o["placement"] == "cpu"]
    assert predicted == truth
    assert result["tpu_ops"] + result["cpu_ops"] == len(load_tflite(source).main.ops)


def test_ground_truth_is_present_or_skipped():
    if not PAIRS:
        pytest.skip("needs the compiled pairs in ../shared/models/coral")
    assert any("deeplab" in p.name for p in PAIRS)


def test_check_edgetpu_cli_json_and_exit_codes():
    deeplab = CORAL_MODELS / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
    if not deeplab.exists():
        pytest.skip(f"needs {deeplab}")
    r = run_cli("check-edgetpu", str(deeplab), "--json", module="host_training")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert {"ops", "tpu_ops", "cpu_ops", "verdict"} <= set(out)
    assert out["cpu_ops"] == 8 and out["tpu_ops"] == 64
    first_cpu = next(o for o in out["ops"] if o["placement"] == "cpu")
    assert first_cpu["op"] == "RESIZE_BILINEAR" and "not mapped" in first_cpu["reason"]
    assert out["ops"][-1]["reason"] == "Operation not supported"  # ARG_MAX
    assert [o["index"] for o in out["ops"]] == list(range(len(out["ops"])))
    ok = run_cli("check-edgetpu", str(deeplab), "--allow-cpu-ops", module="host_training")
    assert ok.returncode == 0 and "More than one subgraph is not supported" in ok.stdout


def test_our_exports_map_entirely_to_the_tpu():
    result = analyse(load_tflite(DEMO / "model_quant.tflite"))
    assert result["cpu_ops"] == 0 and result["ok"], result["verdict"]
    ops = [o["op"] for o in result["ops"]]
    assert ops[0] == "QUANTIZE" and ops[-1] == "QUANTIZE"  # uint8 edges, on the TPU too


def test_inspect_compiled_model_lists_cpu_ops():
    compiled = CORAL_MODELS / "deeplabv3_mnv2_dm05_pascal_quant_edgetpu.tflite"
    if not compiled.exists():
        pytest.skip(f"needs {compiled}")
    r = run_cli("inspect", str(compiled), "--json", module="host_training")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    sg = info["subgraphs"][0]
    assert info["compiled_for_edgetpu"] and sg["custom_ops"] == [EDGETPU_CUSTOM_OP]
    assert [o["op"] for o in sg["cpu_ops"]][:2] == ["RESIZE_BILINEAR", "QUANTIZE"]
    assert sg["inputs"][0]["dtype"] == "uint8" and sg["inputs"][0]["shape"] == [1, 513, 513, 3]


def test_inspect_uncompiled_demo_model():
    r = run_cli("inspect", str(DEMO / "model_quant.tflite"), module="host_training")
    assert r.returncode == 0 and "compiled for the Edge TPU: False" in r.stdout
    assert "CONV_2D" in r.stdout and "uint8 [1, 96, 96, 3]" in r.stdout


def test_not_a_model_is_a_clear_error(tmp_path):
    f = tmp_path / "x.tflite"
    f.write_bytes(b"hello world, not flatbuffers")
    r = run_cli("check-edgetpu", str(f), module="host_training")
    assert r.returncode == 3 and "not a TFLite model" in r.stderr and "Traceback" not in r.stderr


def test_float_and_dynamic_batch_models_are_flagged(tmp_path):
    import keras
    import tensorflow as tf

    inp = keras.Input((8, 8, 3))
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(
        keras.layers.Conv2D(4, 3)(inp)))
    model = keras.Model(inp, out)
    f = tmp_path / "float.tflite"
    f.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    result = analyse(load_tflite(f))
    assert not result["ok"] and "not quantized" in result["verdict"]
    assert "dynamic shape" in result["verdict"]  # the Keras batch dimension is None
    assert all(o["placement"] == "cpu" for o in result["ops"])


SAMPLE_REPORT = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 1135 ms.

Input model: model_quant.tflite
Input size: 3.05MiB
Output model: model_quant_edgetpu.tflite
Output size: 3.39MiB
On-chip memory used for caching model parameters: 3.36MiB
On-chip memory remaining for caching model parameters: 4.35MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 72
Operation log: model_quant_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU.
Number of operations that will run on Edge TPU: 64
Number of operations that will run on CPU: 8

Operator                       Count      Status

RESIZE_BILINEAR                2          More than one subgraph is not supported
RESIZE_BILINEAR                1          Operation is otherwise supported, but not mapped due to some unspecified limitation
CONV_2D                        38         Mapped to Edge TPU
ARG_MAX                        1          Operation not supported
Compilation child process completed within timeout period.
Compilation succeeded!
"""


def test_parse_compiler_report():
    r = parse_report(SAMPLE_REPORT)
    assert (r.compiler_version, r.tpu_ops, r.cpu_ops, r.subgraphs, r.total_ops) == (
        "16.0.384591198", 64, 8, 1, 72)
    assert (r.on_chip_memory, r.off_chip_memory) == ("3.36MiB", "0.00B")
    assert r.operators[1] == {"op": "RESIZE_BILINEAR", "count": 1, "status":
                              "Operation is otherwise supported, but not mapped due to some "
                              "unspecified limitation"}
    assert len(r.operators) == 4


def test_compile_without_compiler_explains_and_still_analyses(tmp_path):
    env = {"PATH": str(tmp_path)}  # no edgetpu_compiler anywhere
    r = run_cli("compile", str(DEMO), module="host_training",
                env={**os.environ, **env, "PATH": f"{tmp_path}:/usr/bin:/bin"})
    if shutil.which("edgetpu_compiler"):
        pytest.skip("a real edgetpu_compiler is installed here")
    assert r.returncode == 1
    assert "x86-64 Linux" in r.stderr and "apt" in r.stderr
    assert "all ops run on the Edge TPU" in r.stdout


def _fake_compiler(folder, version="16.0.384591198"):
    """A stand-in executable speaking the compiler's command line and output format."""
    exe = folder / "edgetpu_compiler"
    exe.write_text(f"""#!/bin/sh
if [ "$1" = "--version" ]; then echo "Edge TPU Compiler version {version}"; exit 0; fi
out=""; model=""
while [ $# -gt 0 ]; do case "$1" in --out_dir) out="$2"; shift 2;; --timeout_sec) shift 2;;
  --*) shift;; *) model="$1"; shift;; esac; done
name=$(basename "$model" .tflite)
cp "$model" "$out/${{name}}_edgetpu.tflite"
cat <<'REPORT'
{SAMPLE_REPORT}REPORT
""")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def test_compile_with_compiler_updates_bundle(tmp_path):
    bundle = tmp_path / "demo"
    shutil.copytree(DEMO, bundle)
    _fake_compiler(tmp_path)
    r = run_cli("compile", str(bundle), module="host_training",
                env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr
    b = load_bundle(bundle)  # every sha256, the new file's included
    assert b.tpu_model == bundle / TPU_MODEL
    assert b.manifest["edgetpu"]["tpu_ops"] == 64
    assert b.manifest["edgetpu"]["compiler_version"] == "16.0.384591198"
    assert TPU_MODEL in b.manifest["files"]


def test_old_compiler_is_refused(tmp_path):
    bundle = tmp_path / "demo"
    shutil.copytree(DEMO, bundle)
    _fake_compiler(tmp_path, version="15.0.340273435")
    r = run_cli("compile", str(bundle), module="host_training",
                env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert r.returncode == 3 and "older than 16" in r.stderr
    assert not (bundle / TPU_MODEL).exists()
