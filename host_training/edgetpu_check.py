"""Predict, without the compiler, which ops edgetpu_compiler maps to the Edge TPU.

Follows Coral's documented model requirements (coral.ai/docs/edgetpu/models-intro):
8-bit quantized tensors, sizes fixed at compile time, at most 3 innermost dimensions
larger than 1, the supported-ops table with each op's restrictions, and the partition
rule: from the first op that cannot be mapped, every later op stays on the CPU (the
compiler makes a single TPU subgraph). Reasons use the compiler's own words where it
has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from host_training.tflite_model import EDGETPU_CUSTOM_OP, Op, Subgraph, TFLiteModel

NOT_SUPPORTED = "Operation not supported"
UNSPECIFIED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
SUBGRAPH = "More than one subgraph is not supported"
DATA_TYPE = "Operation is working on an unsupported data type"
DYNAMIC = "Attempted to use a dynamic-sized tensor"
RANK = "Operation has tensors with more than 3 dimensions larger than 1"

# Coral's supported-ops table (compiler 16) -> the op's documented restriction, checked below.
SUPPORTED = {
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "HARD_SWISH", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM",
    "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX",
    "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT",
    "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE",
    "TRANSPOSE_CONV", "UNIDIRECTIONAL_SEQUENCE_LSTM", "TILE",
}
NO_FUSED_ACTIVATION = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"}
# Tensors that legitimately hold int32: biases and shape/axis/size operands.
INT32_OPERANDS = {"CONV_2D": {2}, "DEPTHWISE_CONV_2D": {2}, "FULLY_CONNECTED": {2},
                  "TRANSPOSE_CONV": {0, 3}, "RESHAPE": {1}, "RESIZE_BILINEAR": {1},
                  "RESIZE_NEAREST_NEIGHBOR": {1}, "MEAN": {1}, "SUM": {1}, "REDUCE_MAX": {1},
                  "REDUCE_MIN": {1}, "PAD": {1}, "STRIDED_SLICE": {1, 2, 3}, "SLICE": {1, 2},
                  "SPLIT": {0}, "TRANSPOSE": {1}, "EXPAND_DIMS": {1}, "TILE": {1},
                  "UNIDIRECTIONAL_SEQUENCE_LSTM": set(range(12, 16))}
SOFTMAX_MAX_ELEMENTS = 16000


@dataclass(frozen=True)
class Placement:
    index: int
    op: str
    version: int
    placement: str  # "tpu" | "cpu"
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "version": self.version,
                "placement": self.placement, "reason": self.reason}


def _innermost_ok(shape: tuple[int, ...]) -> bool:
    """At most 3 dimensions larger than 1, and those innermost."""
    big = [i for i, d in enumerate(shape) if d > 1]
    return len(big) <= 3 and (not big or big[0] >= len(shape) - 3)


def _axes(sg: Subgraph, op: Op, operand: int) -> list[int] | None:
    if len(op.inputs) <= operand or op.inputs[operand] < 0:
        return None
    t = sg.tensors[op.inputs[operand]]
    return None if t.data is None else [int(x) for x in t.data]


def _resize_ok(sg: Subgraph, op: Op) -> bool:
    """Mapped only at whole-number scale factors (the docs: "depending on input/output
    size, may not be mapped to avoid loss in precision")."""
    src, dst = sg.tensors[op.inputs[0]].shape, sg.tensors[op.outputs[0]].shape
    if len(src) != 4 or len(dst) != 4 or src[0] != 1:
        return False
    align = bool(op.options.get("alignCorners"))
    for a, b in ((src[1], dst[1]), (src[2], dst[2])):
        if align:
            if a <= 1 or (b - 1) % (a - 1):
                return False
        elif b % a and a % b:
            return False
    return True


def op_restriction(sg: Subgraph, op: Op) -> str:
    """'' when the op itself can be mapped, else the reason it cannot."""
    if op.name == EDGETPU_CUSTOM_OP:
        return ""
    if op.custom or op.name not in SUPPORTED:
        return NOT_SUPPORTED
    tensors = [(k, sg.tensors[i]) for k, i in enumerate(op.inputs) if i >= 0]
    outs = [sg.tensors[i] for i in op.outputs]
    allowed32 = INT32_OPERANDS.get(op.name, set())
    for k, t in tensors:
        if t.dtype in ("uint8", "int8") or (t.dtype in ("int32", "int64") and
                                            (k in allowed32 or t.constant)):
            continue
        if t.dtype == "int16" and op.name == "UNIDIRECTIONAL_SEQUENCE_LSTM":
            continue
        return DATA_TYPE
    if any(t.dtype not in ("uint8", "int8") for t in outs):
        return DATA_TYPE
    for t in [t for _, t in tensors if not t.constant] + outs:
        if any(d < 0 for d in t.shape_signature):
            return DYNAMIC
        if not _innermost_ok(t.shape):
            return RANK
    if op.name in NO_FUSED_ACTIVATION and op.options.get("fusedActivationFunction", 0):
        return UNSPECIFIED
    if op.name == "CONCATENATION":
        consts = [t for _, t in tensors if t.constant]
        if consts and (len(tensors) != 2 or any(
                t.data is None or t.data.any() for t in consts)):
            return UNSPECIFIED
    if op.name == "FULLY_CONNECTED" and op.options.get("weightsFormat", 0) != 0:
        return UNSPECIFIED
    if op.name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"):
        rank = len(tensors[0][1].shape)
        axes = _axes(sg, op, 1)
        if axes is None or rank != 4 or not {a % rank for a in axes} <= {1, 2}:
            return UNSPECIFIED
    if op.name == "PAD":
        pads = _axes(sg, op, 1)
        rank = len(tensors[0][1].shape)
        if pads is None or (rank == 4 and any(pads[i] for i in (0, 1, 6, 7))):
            return UNSPECIFIED
    if op.name in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR") and not _resize_ok(sg, op):
        return UNSPECIFIED
    if op.name == "SOFTMAX":
        shape = tensors[0][1].shape
        if sum(d > 1 for d in shape) > 1 or (shape and shape[-1] > SOFTMAX_MAX_ELEMENTS):
            return UNSPECIFIED
    if op.name == "STRIDED_SLICE":
        strides = _axes(sg, op, 3)
        if strides is None or any(s != 1 for s in strides) or \
                op.options.get("ellipsisMask", 0) or op.options.get("newAxisMask", 0):
            return UNSPECIFIED
    if op.name == "PACK" and op.options.get("axis", 0) == 0:
        return UNSPECIFIED
    return ""


def analyse(model: TFLiteModel, multiple_subgraphs: bool = False) -> dict[str, Any]:
    """Predicted placement of every op of the main subgraph, in execution order."""
    sg = model.main
    placements: list[Placement] = []
    partitioned = False
    for op in sg.ops:
        if op.name == EDGETPU_CUSTOM_OP:
            placements.append(Placement(op.index, op.name, op.version, "tpu", "already compiled"))
            continue
        reason = op_restriction(sg, op)
        if partitioned and not multiple_subgraphs:
            placements.append(Placement(op.index, op.name, op.version, "cpu",
                                        reason or SUBGRAPH))
            continue
        if reason:
            partitioned = True
            placements.append(Placement(op.index, op.name, op.version, "cpu", reason))
        else:
            placements.append(Placement(op.index, op.name, op.version, "tpu", "Mapped to Edge TPU"))
    model_issues = _model_issues(model)
    tpu = sum(p.placement == "tpu" for p in placements)
    cpu = len(placements) - tpu
    if model_issues:
        verdict = "not compilable: " + "; ".join(model_issues)
    elif cpu == 0:
        verdict = "all ops run on the Edge TPU"
    elif tpu == 0:
        verdict = "nothing runs on the Edge TPU"
    else:
        verdict = f"{cpu} of {len(placements)} ops would run on the CPU"
    return {"model": str(model.path), "compiled_for_edgetpu": model.compiled_for_edgetpu,
            "ops": [p.as_dict() for p in placements], "tpu_ops": tpu, "cpu_ops": cpu,
            "model_issues": model_issues, "verdict": verdict,
            "ok": not model_issues and cpu == 0}


def _model_issues(model: TFLiteModel) -> list[str]:
    sg = model.main
    issues = []
    for i in sg.inputs:
        t = sg.tensors[i]
        if any(d < 0 for d in t.shape_signature):
            issues.append(f"input {t.name!r} has a dynamic shape {list(t.shape_signature)} "
                          "(the compiler then says 'Model not quantized'): convert with a "
                          "fixed batch size of 1")
    if not any(t.quantized for t in sg.tensors):
        issues.append("the model is not quantized: use full-integer post-training "
                      "quantization (`coral-train train` does)")
    if len(model.subgraphs) > 1 and not model.compiled_for_edgetpu:
        issues.append(f"{len(model.subgraphs)} subgraphs: only the first is analysed")
    return issues


def format_report(result: dict[str, Any]) -> str:
    lines = [f"{'#':>4}  {'op':<28} {'v':>2}  {'placement':<9} reason"]
    for p in result["ops"]:
        lines.append(f"{p['index']:>4}  {p['op']:<28} {p['version']:>2}  "
                     f"{p['placement'].upper():<9} {p['reason']}")
    lines.append(f"\nEdge TPU: {result['tpu_ops']} ops, CPU: {result['cpu_ops']} ops — "
                 f"{result['verdict']}")
    return "\n".join(lines)
