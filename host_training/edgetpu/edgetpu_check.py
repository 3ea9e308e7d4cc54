"""Predict, without the compiler, which ops edgetpu_compiler maps to the Edge TPU.

Per op it follows Coral's documented model requirements (coral.ai/docs/edgetpu/models-intro):
8-bit quantized tensors, sizes fixed at compile time, at most 3 innermost dimensions larger
than 1, and the supported-ops table with each op's restrictions. Reasons use the compiler's
own words.

The partition rule works on the graph (which op reads which tensor), not on file order. The
compiler's placements fit TFLite's delegate partitioner (the compiler is closed source, so this
is inferred from its output): repeatedly take every op whose inputs are ready and whose kind
(mappable or not) matches the first such op, until none is left. Without `-a` only the first
mappable run becomes the single Edge TPU segment, so:

- unmappable ops at the inputs (CAST, a float QUANTIZE) run first on the CPU and do not end
  the segment;
- the segment is every mappable op that does not depend on a later unmappable op;
- each unmappable op after that, and every op depending on it, stays on the CPU; mappable ones
  are reported "More than one subgraph is not supported", except a QUANTIZE that writes a
  model output, which the compiler reports as an "unspecified limitation".

Checked against the compiled pairs in ../shared/models/coral and against real public compiler
transcripts in tests/fixtures/edgetpu_transcripts (f0cal/google-coral#20,
google-coral/edgetpu#342, system-software-lab/nrf20, dbro/frigate-detector-edgetpu-yolo9 and
others: each file names its source). The transcripts also show the per-op wording: a float
QUANTIZE is an "unspecified limitation", and any op touching float tensors (DEQUANTIZE,
TFLite_Detection_PostProcess) "is working on an unsupported data type".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from host_training.train.tflite_model import EDGETPU_CUSTOM_OP, Op, Subgraph, TFLiteModel

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
FLOAT = ("float16", "float32", "float64")
MAPPED = "Mapped to Edge TPU"


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
    tensors = [(k, sg.tensors[i]) for k, i in enumerate(op.inputs) if i >= 0]
    outs = [sg.tensors[i] for i in op.outputs]
    # The transcripts show the compiler judges float tensors before the op's support: a
    # float-to-int QUANTIZE is an "unspecified limitation", DEQUANTIZE and a post-processing
    # custom op with float operands are "working on an unsupported data type".
    if op.name == "QUANTIZE" and tensors and tensors[0][1].dtype in FLOAT:
        return UNSPECIFIED
    if any(t.dtype in FLOAT for t in [t for _, t in tensors] + outs):
        return DATA_TYPE
    if op.custom or op.name not in SUPPORTED:
        return NOT_SUPPORTED
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


@dataclass(frozen=True)
class GraphOp:
    """One op as the partitioner sees it: the tensors it reads and writes, and '' when the
    Edge TPU could run it on its own, else the compiler's reason. Both the TFLite parser and
    hand-written test graphs feed this, so the partition rule is tested without models."""

    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    reason: str = ""


def _delegate_subsets(ops: Sequence[GraphOp]) -> list[tuple[bool, list[int]]]:
    """(mappable, op indices) runs, as TFLite's PartitionGraphIntoIndependentNodeSubsets makes
    them: the first ready op sets a run's kind, and the run takes every ready op of that kind
    until none is left. A tensor no op writes (a model input, a constant) is always ready."""
    writer = {t: i for i, op in enumerate(ops) for t in op.outputs}
    done: set[int] = set()
    subsets: list[tuple[bool, list[int]]] = []
    while len(done) < len(ops):
        kind: bool | None = None
        members: list[int] = []
        grew = True
        while grew:
            grew = False
            for i, op in enumerate(ops):
                if i in done or any(t in writer and writer[t] not in done for t in op.inputs):
                    continue
                mappable = not op.reason
                kind = mappable if kind is None else kind
                if mappable == kind:
                    done.add(i)
                    members.append(i)
                    grew = True
        if not members:  # a cycle: nothing is ever ready, so nothing can be delegated
            subsets.append((False, [i for i in range(len(ops)) if i not in done]))
            break
        subsets.append((bool(kind), members))
    return subsets


def partition(ops: Sequence[GraphOp], graph_outputs: Sequence[int] = (),
              multiple_subgraphs: bool = False) -> list[tuple[str, str]]:
    """("tpu" | "cpu", the compiler's status) for each op, in the order given.

    Without multiple_subgraphs only the first mappable run becomes the Edge TPU segment (the
    compiler's default); with it (`edgetpu_compiler -a`) every mappable run does.
    """
    runs = [members for mappable, members in _delegate_subsets(ops) if mappable]
    on_tpu = {i for members in (runs if multiple_subgraphs else runs[:1]) for i in members}
    outputs = set(graph_outputs)
    result = []
    for i, op in enumerate(ops):
        if i in on_tpu:
            result.append(("tpu", MAPPED))
        elif op.reason:
            result.append(("cpu", op.reason))
        elif op.name == "QUANTIZE" and outputs.intersection(op.outputs):
            result.append(("cpu", UNSPECIFIED))  # the output requantize of a lost segment
        else:
            result.append(("cpu", SUBGRAPH))
    return result


def status_counts(ops: Sequence[str], statuses: Sequence[str]) -> Counter[tuple[str, str]]:
    """(op, status) -> count: the compiler's Operator / Count / Status table."""
    return Counter(zip(ops, statuses, strict=True))


def analyse(model: TFLiteModel, multiple_subgraphs: bool = False) -> dict[str, Any]:
    """Predicted placement of every op of the main subgraph, in execution order."""
    sg = model.main
    graph = [GraphOp(op.name, tuple(i for i in op.inputs if i >= 0), op.outputs,
                     op_restriction(sg, op)) for op in sg.ops]
    placements = []
    for op, (where, status) in zip(sg.ops, partition(graph, sg.outputs, multiple_subgraphs),
                                   strict=True):
        if op.name == EDGETPU_CUSTOM_OP:
            where, status = "tpu", "already compiled"
        placements.append(Placement(op.index, op.name, op.version, where, status))
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
