"""Model inspection, the offline Edge TPU analysis against the compiler's own output,
and the compile wrapper."""

import json
import os
import shutil
import stat
from collections import Counter

import pytest

from device.bundle import TPU_MODEL, load_bundle
from host_training.edgetpu.compiler import parse_report
from host_training.edgetpu.edgetpu_check import (
    DATA_TYPE,
    MAPPED,
    NOT_SUPPORTED,
    SUBGRAPH,
    UNSPECIFIED,
    GraphOp,
    analyse,
    partition,
    status_counts,
)
from host_training.train.tflite_model import EDGETPU_CUSTOM_OP, load_tflite

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


@pytest.mark.train
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


# --- The partition rule against real compiler transcripts ---------------------------------
# Each fixture is a public edgetpu_compiler Operator / Count / Status table (its header names
# the source). The models are not public, so each test rebuilds the graph the transcript's
# model has (op types, counts and tensor connections, in a plausible execution order) and
# gives the ops the compiler could not map on their own the transcript's reason: what is under
# test is the partition, i.e. which of the remaining ops end up mapped and with what status.

TRANSCRIPTS = ROOT / "tests" / "fixtures" / "edgetpu_transcripts"
VERSION = "Operation version not supported"
UNITARY = "Only Strided-Slice with unitary strides supported"


class Net:
    """A synthetic graph: tensor 0 is the model input; each op writes one new tensor."""

    def __init__(self):
        self.ops: list[GraphOp] = []
        self.outputs: list[int] = []
        self._next = 1

    def add(self, name, *inputs, reason=""):
        t = self._next
        self._next += 1
        self.ops.append(GraphOp(name, inputs, (t,), reason))
        return t

    def chain(self, x, counts, reason=""):
        """Append counts' ops one after another, each reading the previous one's output."""
        for name, n in counts.items():
            for _ in range(n):
                x = self.add(name, x, reason=reason)
        return x

    def output(self, t):
        self.outputs.append(t)


def mobilenet_v2(net, x, pad_every_3x3=False, transpose_1x1=False):
    """MobileNetV2's 35 CONV_2D, 17 DEPTHWISE_CONV_2D and 10 residual ADDs. TF pads before
    the 5 stride-2 convs; a PyTorch export pads every 3x3 conv and, converted from NCHW,
    wraps the stem and each 1x1 conv in TRANSPOSEs."""
    def conv(x):
        if transpose_1x1:
            x = net.add("TRANSPOSE", x, reason=NOT_SUPPORTED)
            return net.add("TRANSPOSE", net.add("CONV_2D", x), reason=NOT_SUPPORTED)
        return net.add("CONV_2D", x)

    x = conv(net.add("PAD", x))  # the stride-2 stem
    for t, _, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            y = conv(x) if t > 1 else x
            if pad_every_3x3 or (s == 2 and i == 0):
                y = net.add("PAD", y)
            y = conv(net.add("DEPTHWISE_CONV_2D", y))
            x = net.add("ADD", x, y) if i > 0 else y
    return conv(x)


def f0cal_google_coral_20():
    net = Net()
    x = net.add("QUANTIZE", 0, reason=UNSPECIFIED)  # float input
    x = net.add("SOFTMAX", net.add("FULLY_CONNECTED", net.add("MEAN", mobilenet_v2(net, x))))
    net.output(net.add("DEQUANTIZE", x, reason=DATA_TYPE))
    return net


def nrf20_mnist(float_io):
    net = Net()
    x = net.add("QUANTIZE", 0, reason=UNSPECIFIED) if float_io else 0
    x = net.chain(x, {"CONV_2D": 1, "MAX_POOL_2D": 1})
    x = net.chain(x, {"CONV_2D": 1, "MAX_POOL_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 2,
                      "SOFTMAX": 1})
    net.output(net.add("DEQUANTIZE", x, reason=DATA_TYPE) if float_io else x)
    return net


def google_coral_edgetpu_342():
    net = Net()
    x = net.add("QUANTIZE", 0)  # uint8 in, requantized
    x = mobilenet_v2(net, x, pad_every_3x3=True, transpose_1x1=True)
    x = net.add("FULLY_CONNECTED", net.chain(x, {"MEAN": 2}))
    net.output(net.add("QUANTIZE", x))
    return net


def frigate_yolov9t():
    """The mapped body as one chain; the head as in YOLOv9's Detect: per scale, the DFL box
    distances are GATHERed and decoded, then `cat((boxes, cls.sigmoid()))`, so the class
    sigmoid comes after the box decoding in execution order."""
    net = Net()
    body = net.chain(0, {"QUANTIZE": 5, "CONV_2D": 203, "LOGISTIC": 181, "MUL": 179,
                         "ADD": 48, "CONCATENATION": 33, "STRIDED_SLICE": 16, "TRANSPOSE": 14,
                         "RESHAPE": 9, "SPLIT": 6, "AVERAGE_POOL_2D": 5, "SOFTMAX": 3,
                         "MAXIMUM": 3, "MINIMUM": 3, "MAX_POOL_2D": 3, "FULLY_CONNECTED": 3,
                         "PAD": 2, "RESIZE_NEAREST_NEIGHBOR": 2})
    anchors, boxes = 10_000, []  # an unwritten tensor: a constant
    for _ in range(3):
        lt = net.add("SUB", anchors, net.add("GATHER", body, reason=NOT_SUPPORTED))
        rb = net.add("ADD", anchors, net.add("GATHER", body, reason=NOT_SUPPORTED))
        box = net.add("CONCATENATION", net.add("ADD", lt, rb), net.add("SUB", rb, lt))
        boxes.append(net.add("MUL", box, anchors))
    x = net.add("TRANSPOSE", net.add("CONCATENATION", *boxes), reason=UNSPECIFIED)
    x = net.add("TRANSPOSE", net.add("MUL", x, anchors), reason=UNSPECIFIED)
    cls = net.add("LOGISTIC", body)
    x = net.add("TRANSPOSE", net.add("CONCATENATION", x, cls))
    net.output(net.add("CONCATENATION", x, cls))
    return net


def yolov3_tiny():
    net = Net()
    x = net.add("LEAKY_RELU", net.add("CONV_2D", net.add("QUANTIZE", 0)),
                reason=NOT_SUPPORTED)
    for _ in range(5):
        x = net.add("MAX_POOL_2D", x)
        x = net.add("LEAKY_RELU", net.add("CONV_2D", x), reason=NOT_SUPPORTED)
    skip = x
    for _ in range(2):
        x = net.add("LEAKY_RELU", net.add("CONV_2D", x), reason=NOT_SUPPORTED)
        x = x if _ else net.add("MAX_POOL_2D", x)
    route = x
    x = net.add("LEAKY_RELU", net.add("CONV_2D", route), reason=NOT_SUPPORTED)
    net.output(net.add("QUANTIZE", net.add("CONV_2D", x)))
    x = net.add("LEAKY_RELU", net.add("CONV_2D", route), reason=NOT_SUPPORTED)
    x = net.add("QUANTIZE", net.add("RESIZE_NEAREST_NEIGHBOR", x, reason=VERSION))
    x = net.add("LEAKY_RELU", net.add("CONV_2D", net.add("CONCATENATION", x, skip)),
                reason=NOT_SUPPORTED)
    net.output(net.add("QUANTIZE", net.add("CONV_2D", x)))
    return net


def yolov5s_v15():
    """Everything reads the Focus layer's four stride-2 slices of the input."""
    net = Net()
    q = net.add("QUANTIZE", 0)
    x = net.add("CONCATENATION", *[net.add("STRIDED_SLICE", q, reason=UNITARY)
                                   for _ in range(4)])
    x = net.chain(x, {"CONV_2D": 62, "LOGISTIC": 62, "MUL": 80, "QUANTIZE": 24, "ADD": 10,
                      "CONCATENATION": 16, "STRIDED_SLICE": 9, "PAD": 6, "MAX_POOL_2D": 3,
                      "SUB": 3, "RESHAPE": 3})
    x = net.chain(x, {"RESIZE_NEAREST_NEIGHBOR": 2}, reason=VERSION)
    x = net.chain(x, {"TRANSPOSE": 3}, reason=NOT_SUPPORTED)
    x = net.chain(x, {"RESHAPE": 3}, reason=UNSPECIFIED)  # to 5-D
    net.output(net.add("QUANTIZE", net.add("CONCATENATION", x, reason=UNSPECIFIED)))
    return net


def motion_blur():
    net = Net()
    x = net.add("DEPTHWISE_CONV_2D", net.add("QUANTIZE", 0, reason=UNSPECIFIED))
    net.output(net.add("DEQUANTIZE", x, reason=DATA_TYPE))
    return net


def efficientdet_lite():
    """Box and class heads each end in a float DEQUANTIZE feeding the post-processing op."""
    net = Net()
    x = net.chain(net.add("QUANTIZE", 0), {"CONV_2D": 102, "DEPTHWISE_CONV_2D": 80,
                                           "ADD": 42, "MAX_POOL_2D": 14,
                                           "RESIZE_NEAREST_NEIGHBOR": 12})
    heads = []
    for activation in ({}, {"LOGISTIC": 1}):
        reshaped = [net.add("RESHAPE", x) for _ in range(5)]
        y = net.chain(net.add("CONCATENATION", *reshaped), activation)
        heads.append(net.add("DEQUANTIZE", y, reason=DATA_TYPE))
    net.output(net.add("CUSTOM", *heads, reason=DATA_TYPE))
    return net


CASES = {
    "f0cal_google-coral_20_mobilenet_v2_ptq": f0cal_google_coral_20,
    "nrf20_mnist4_float_io": lambda: nrf20_mnist(float_io=True),
    "nrf20_mnist7_int8_io": lambda: nrf20_mnist(float_io=False),
    "google-coral_edgetpu_342_pytorch_mobilenet_v2": google_coral_edgetpu_342,
    "dbro_frigate-detector-edgetpu-yolo9_yolov9t": frigate_yolov9t,
    "yolo_readme_yolov3_tiny_int8": yolov3_tiny,
    "yolo_readme_yolov5s_int8": yolov5s_v15,
    "article_motion_blur_depthwise": motion_blur,
    "gitbook_efficientdet_lite_coral_v2": efficientdet_lite,
}


def _transcript(name):
    report = parse_report((TRANSCRIPTS / f"{name}.txt").read_text())
    return Counter({(o["op"], o["status"]): o["count"] for o in report.operators}), report


def test_every_transcript_has_a_graph():
    assert {p.stem for p in TRANSCRIPTS.glob("*.txt")} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_partition_reproduces_the_compiler_transcript(name):
    truth, report = _transcript(name)
    net = CASES[name]()
    placed = partition(net.ops, net.outputs)
    assert status_counts([op.name for op in net.ops], [s for _, s in placed]) == truth
    tpu = sum(where == "tpu" for where, _ in placed)
    assert tpu == truth.total() - sum(n for (_, s), n in truth.items() if s != MAPPED)
    if report.tpu_ops is not None:
        assert (tpu, len(placed) - tpu) == (report.tpu_ops, report.cpu_ops)


def test_leading_cpu_ops_do_not_end_the_segment():
    """The held-out pose model's shape: CAST and QUANTIZE at the input, then a backbone,
    then unsupported post-processing. Only the two ends stay on the CPU."""
    net = Net()
    x = net.add("QUANTIZE", net.add("CAST", 0, reason=DATA_TYPE), reason=UNSPECIFIED)
    x = net.chain(x, {"CONV_2D": 5, "DEPTHWISE_CONV_2D": 4, "ADD": 2})
    net.output(net.chain(x, {"DEQUANTIZE": 1, "ARG_MAX": 1}, reason=DATA_TYPE))
    placed = [where for where, _ in partition(net.ops, net.outputs)]
    assert placed == ["cpu", "cpu"] + ["tpu"] * 11 + ["cpu", "cpu"]


def test_ops_independent_of_the_break_stay_mapped_and_dependants_do_not():
    net = Net()
    a = net.add("CONV_2D", 0)
    bad = net.add("GATHER", a, reason=NOT_SUPPORTED)
    after_bad = net.add("ADD", bad, a)  # reads the CPU op: off the segment
    side = net.add("LOGISTIC", a)  # later in file order, but independent of the GATHER
    net.output(net.add("CONCATENATION", after_bad, side))
    assert partition(net.ops, net.outputs) == [
        ("tpu", MAPPED), ("cpu", NOT_SUPPORTED), ("cpu", SUBGRAPH), ("tpu", MAPPED),
        ("cpu", SUBGRAPH)]
    with_a = partition(net.ops, net.outputs, multiple_subgraphs=True)
    assert [w for w, _ in with_a] == ["tpu", "cpu", "tpu", "tpu", "tpu"]


@pytest.mark.train
def test_float_io_int8_model_keeps_only_its_ends_on_the_cpu(tmp_path):
    """A real converter output with the f0cal_google-coral_20 shape: full-integer weights and
    activations but float input and output. The old rule put everything on the CPU."""
    import keras
    import numpy as np
    import tensorflow as tf

    inp = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    out = keras.layers.Dense(4, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, out))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: (
        [rng.random((1, 16, 16, 3), dtype=np.float32)] for _ in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    f = tmp_path / "float_io.tflite"
    f.write_bytes(converter.convert())
    ops = analyse(load_tflite(f))["ops"]
    assert (ops[0]["op"], ops[0]["placement"], ops[0]["reason"]) == (
        "QUANTIZE", "cpu", UNSPECIFIED)
    assert (ops[-1]["op"], ops[-1]["placement"], ops[-1]["reason"]) == (
        "DEQUANTIZE", "cpu", DATA_TYPE)
    assert len(ops) > 3 and all(o["placement"] == "tpu" for o in ops[1:-1])
