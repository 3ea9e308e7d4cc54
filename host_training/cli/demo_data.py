"""`coral-train demo-data`: write the synthetic 'notes in a slot' dataset."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `demo-data` and its options on the subcommand table."""
    d = sub.add_parser("demo-data", help="write the synthetic 'notes in a slot' dataset")
    d.add_argument("out", help="output folder")
    d.add_argument("--per_class", "--per-class", dest="per_class", type=int, default=60,
                   help="images per class (default 60)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    """Write the images, one subfolder per class."""
    from device.tools.synthetic import write_dataset

    write_dataset(Path(a.out), a.per_class, a.seed)
    print(f"synthetic dataset written to {a.out}")
    return 0
