"""`coral-train check-edgetpu`: predict, offline, which ops of a .tflite run on the Edge TPU."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `check-edgetpu` and its options on the subcommand table."""
    c = sub.add_parser("check-edgetpu", help="predict, offline, which ops run on the Edge TPU")
    c.add_argument("model", help="uncompiled .tflite file")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.add_argument("--allow_cpu_ops", "--allow-cpu-ops", dest="allow_cpu_ops",
                   action="store_true", help="exit 0 even when some ops would run on the CPU")
    c.add_argument("--multiple_subgraphs", "--multiple-subgraphs", dest="multiple_subgraphs",
                   action="store_true", help="assume the compiler may split the model")
    c.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    """Print the prediction; exit 1 on model issues or (unless allowed) ops left on the CPU."""
    from host_training.edgetpu.edgetpu_check import analyse, format_report
    from host_training.train.tflite_model import load_tflite

    result = analyse(load_tflite(a.model), multiple_subgraphs=a.multiple_subgraphs)
    print(json.dumps(result) if a.json else format_report(result))
    if result["model_issues"]:
        return 1
    return 0 if result["cpu_ops"] == 0 or a.allow_cpu_ops else 1
