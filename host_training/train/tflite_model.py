"""Read a .tflite flatbuffer into plain records: ops in execution order, tensors, metadata.

Uses the schema bindings that ship with ai-edge-litert (or TensorFlow), so inspecting a
model needs neither the Edge TPU compiler nor an x86-64 host.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import ModelError

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string",
          6: "bool", 7: "int16", 9: "int8", 10: "float64", 16: "uint32", 17: "uint16"}


def _schema():
    for name in ("ai_edge_litert.schema_py_generated",
                 "tensorflow.lite.python.schema_py_generated"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ModelError("no TFLite schema bindings: `pip install ai-edge-litert`")


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    constant: bool  # has data in the flatbuffer (weights, bias, shape constants)
    data: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def quantized(self) -> bool:
        return bool(self.scale)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "shape_signature": list(self.shape_signature),
                "quantization": {"scale": list(self.scale)[:4], "zero_point":
                                 list(self.zero_point)[:4], "channels": len(self.scale)}}


@dataclass(frozen=True)
class Op:
    index: int
    name: str  # builtin name (CONV_2D) or the custom code (edgetpu-custom-op)
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any]
    custom: bool


@dataclass(frozen=True)
class Subgraph:
    name: str
    ops: tuple[Op, ...]
    tensors: tuple[Tensor, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class TFLiteModel:
    path: Path
    subgraphs: tuple[Subgraph, ...]
    metadata: dict[str, str]
    description: str

    @property
    def main(self) -> Subgraph:
        return self.subgraphs[0]

    @property
    def compiled_for_edgetpu(self) -> bool:
        return any(op.name == EDGETPU_CUSTOM_OP for sg in self.subgraphs for op in sg.ops)


def _options(op) -> dict[str, Any]:
    opts = op.builtinOptions
    if opts is None:
        return {}
    out = {}
    for k, v in vars(opts).items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        out[k] = v
    return out


def load_tflite(path: str | Path) -> TFLiteModel:
    """Parse a .tflite file; ModelError when it is not one."""
    path = Path(path)
    S = _schema()
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelError(f"{path} is not a TFLite model (no TFL3 identifier): corrupt or the "
                         "wrong file")
    try:
        m = S.ModelT.InitFromPackedBuf(buf, 0)
    except Exception as exc:  # the generated parser raises anything on garbage
        raise ModelError(f"{path} is not a readable TFLite model ({exc})") from None
    names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    subgraphs = []
    for sg in m.subgraphs or []:
        tensors = []
        for i, t in enumerate(sg.tensors or []):
            q = t.quantization
            scale = tuple(float(x) for x in (q.scale if q is not None and q.scale is not None
                                             else []))
            zp = tuple(int(x) for x in (q.zeroPoint if q is not None and q.zeroPoint is not None
                                        else []))
            buffer = m.buffers[t.buffer] if t.buffer < len(m.buffers) else None
            raw = buffer.data if buffer is not None and buffer.data is not None else None
            constant = raw is not None and len(raw) > 0
            shape = tuple(int(x) for x in (t.shape if t.shape is not None else []))
            sig = tuple(int(x) for x in t.shapeSignature) if t.shapeSignature is not None \
                else shape
            dtype = _TYPES.get(t.type, f"type{t.type}")
            data = None
            if constant and dtype in ("int32", "int64", "uint8", "int8", "float32") \
                    and len(raw) <= 4096:
                data = np.frombuffer(bytes(raw), dtype=dtype)
            tensors.append(Tensor(i, (t.name or b"").decode(errors="replace"), dtype, shape, sig,
                                  scale if any(scale) else (), zp if any(scale) else (),
                                  constant, data))
        ops = []
        for i, op in enumerate(sg.operators or []):
            oc = m.operatorCodes[op.opcodeIndex]
            code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
            custom = code == S.BuiltinOperator.CUSTOM
            name = (oc.customCode or b"").decode() if custom else names.get(code, f"OP_{code}")
            ops.append(Op(i, name, int(oc.version), tuple(int(x) for x in op.inputs),
                          tuple(int(x) for x in op.outputs), _options(op), custom))
        subgraphs.append(Subgraph((sg.name or b"").decode(), tuple(ops), tuple(tensors),
                                  tuple(int(x) for x in sg.inputs),
                                  tuple(int(x) for x in sg.outputs)))
    metadata = {}
    for md in m.metadata or []:
        name = (md.name or b"").decode()
        data = m.buffers[md.buffer].data
        if data is not None and len(data) < 256:
            metadata[name] = bytes(data).rstrip(b"\0").decode(errors="replace")
        else:
            metadata[name] = f"<{0 if data is None else len(data)} bytes>"
    if not subgraphs:
        raise ModelError(f"{path} has no subgraphs: not a usable model")
    return TFLiteModel(path, tuple(subgraphs), metadata,
                       (m.description or b"").decode(errors="replace"))


def inspect_model(model: TFLiteModel) -> dict[str, Any]:
    """The `coral-train inspect` report as a JSON-ready dict."""
    out: dict[str, Any] = {"path": str(model.path), "description": model.description,
                           "metadata": model.metadata,
                           "compiled_for_edgetpu": model.compiled_for_edgetpu, "subgraphs": []}
    for sg in model.subgraphs:
        counts: dict[tuple[str, int], int] = {}
        for op in sg.ops:
            counts[(op.name, op.version)] = counts.get((op.name, op.version), 0) + 1
        out["subgraphs"].append({
            "name": sg.name,
            "op_count": len(sg.ops),
            "ops": [{"op": n, "version": v, "count": c} for (n, v), c in counts.items()],
            "inputs": [sg.tensors[i].describe() for i in sg.inputs],
            "outputs": [sg.tensors[i].describe() for i in sg.outputs],
            "custom_ops": sorted({op.name for op in sg.ops if op.custom}),
            "cpu_ops": [{"index": op.index, "op": op.name} for op in sg.ops
                        if model.compiled_for_edgetpu and op.name != EDGETPU_CUSTOM_OP],
        })
    return out
