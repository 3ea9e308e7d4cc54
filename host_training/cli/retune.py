"""`coral-train retune`: a bundle's score thresholds tightened from validation photos,
without retraining (host_training/openset/retune.py says why and how)."""

from __future__ import annotations

import argparse
from pathlib import Path

from host_training.cli import log


def _keep(text: str) -> float:
    v = float(text)
    if not 0.5 < v < 1:
        raise argparse.ArgumentTypeError(f"{text}: give a share between 0.5 and 1, e.g. 0.95 "
                                         "(the correct validation notes kept)")
    return v


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `retune` and its options on the subcommand table."""
    r = sub.add_parser("retune", help="tighten a bundle's score thresholds from validation "
                                      "photos, without retraining")
    r.add_argument("--model", required=True, type=Path, help="bundle folder to start from")
    r.add_argument("--val-data", required=True, type=Path,
                   help="validation photos, one subfolder per class (not trained on)")
    r.add_argument("--score-keep", type=_keep, default=0.95,
                   help="share of correctly classified validation notes whose top-1 score "
                        "reaches the new thresholds (default 0.95)")
    r.add_argument("--out", required=True, type=Path,
                   help="where the new bundle goes (may be --model itself: replaced only "
                        "once the new one is complete)")
    r.add_argument("--version", help="the new bundle's version (default: the old one "
                                     "+score<keep>)")
    r.add_argument("--other", type=Path, help="real notes that are not ours "
                                              "(banknotes-other): re-measured through the "
                                              "new point")
    r.add_argument("--negatives", type=Path, help="negatives re-measured through the new "
                                                  "point")
    r.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from host_training.openset.retune import retune
    from host_training.openset.untaught import pct

    s = retune(a.model, a.val_data, a.score_keep, a.out, a.version, a.other, a.negatives)
    changed = ", ".join(f"{k} {v['from']} → {v['to']}" for k, v in s["changed"].items())
    b, n = s["validation_before"] or {}, s["validation"]
    log.info("retuned %s → %s: score floor %.4f; %s", a.model, a.out, s["score_floor"],
             changed or "no threshold changed")
    print(f"validation accepted right {pct(b.get('accepted_right'))} → "
          f"{pct(n['accepted_right'])}, as a wrong value {pct(b.get('accepted_wrong'))} → "
          f"{pct(n['accepted_wrong'])}; report: {a.out / 'report.md'}")
    return 0
