"""`coral-train negative-set`: assemble the negative evaluation set with its sources."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `negative-set` and its options on the subcommand table."""
    n = sub.add_parser("negative-set", help="assemble the negative evaluation set (photos "
                                            "from scikit-image, scikit-learn and Coral, "
                                            "synthetic foreign notes) with its sources")
    n.add_argument("out", help="output folder")
    n.add_argument("--views", type=int, default=4, help="views per photo (default 4)")
    n.add_argument("--from", dest="sources", nargs="+", metavar="DIR",
                   help="instead: whole images and crops of every photo in these folders "
                        "(e.g. wallpapers, for --negatives)")
    n.add_argument("--seed", type=int, default=0, help="random seed for the views (default 0)")
    n.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    """Write the set (from the built-in photos, or from --from folders) and count it."""
    from host_training.train.negset import build_from_folders, build_negative_set

    if a.sources:
        counts = build_from_folders(Path(a.out), [Path(f) for f in a.sources], a.views, a.seed)
    else:
        counts = build_negative_set(Path(a.out), views=a.views, seed=a.seed)
    print(f"negative set written to {a.out}: " + ", ".join(f"{k} {v}" for k, v in
                                                          counts.items()))
    return 0
