"""`coral-train inspect`: ops, versions, tensors and metadata of a .tflite or a bundle's model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from device.errors import ModelError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `inspect` and its options on the subcommand table."""
    i = sub.add_parser("inspect", help="ops, versions, tensors and metadata of a .tflite "
                                       "or a bundle's model")
    i.add_argument("model", help=".tflite file, or a bundle folder (its Edge TPU model when "
                                "compiled, else model_quant.tflite)")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=run)


def _model_path(model: str) -> Path:
    """A bundle folder stands for its Edge TPU model when compiled, else the CPU one."""
    path = Path(model)
    if path.is_dir():
        found = [path / n for n in ("model_quant_edgetpu.tflite", "model_quant.tflite")
                 if (path / n).is_file()]
        if not found:
            raise ModelError(f"{path}: no model_quant_edgetpu.tflite or model_quant.tflite "
                             "in this folder (is it a bundle?)")
        return found[0]
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    return path


def _print_subgraph(i: int, sg: dict) -> None:
    """One subgraph: its ops, input and output tensors, and what falls back to the CPU."""
    print(f"subgraph {i} {sg['name']!r}: {sg['op_count']} ops")
    for op in sg["ops"]:
        print(f"  {op['op']:<30} v{op['version']:<3} x{op['count']}")
    for kind in ("inputs", "outputs"):
        for t in sg[kind]:
            q = t["quantization"]
            print(f"  {kind[:-1]:<6} {t['name']}: {t['dtype']} {t['shape']} "
                  f"(signature {t['shape_signature']}) scale {q['scale'][:1]} "
                  f"zero_point {q['zero_point'][:1]}")
    if sg["cpu_ops"]:
        print("  outside the edgetpu-custom-op (run on the CPU): "
              + ", ".join(o["op"] for o in sg["cpu_ops"]))


def run(a: argparse.Namespace) -> int:
    """Print the model's description, as text or as one JSON object."""
    from host_training.train.tflite_model import inspect_model, load_tflite

    info = inspect_model(load_tflite(_model_path(a.model)))
    if a.json:
        print(json.dumps(info))
        return 0
    print(f"{info['path']}  compiled for the Edge TPU: {info['compiled_for_edgetpu']}")
    for k, v in info["metadata"].items():
        print(f"  metadata {k}: {v}")
    for i, sg in enumerate(info["subgraphs"]):
        _print_subgraph(i, sg)
    return 0
