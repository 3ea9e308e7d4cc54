"""`coral-train compile`: run edgetpu_compiler on a bundle or a .tflite."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `compile` and its options on the subcommand table."""
    k = sub.add_parser("compile", help="run edgetpu_compiler on a bundle or .tflite")
    k.add_argument("model", help="bundle folder or .tflite file")
    k.add_argument("--timeout", type=int, default=600, help="seconds (default 600)")
    k.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    """Compile; exit 1 when the compiler did not produce a model."""
    from host_training.edgetpu.compiler import compile_model

    result = compile_model(Path(a.model), timeout=a.timeout)
    return 0 if result["compiled"] else 1
