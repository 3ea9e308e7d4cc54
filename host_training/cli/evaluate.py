"""`coral-train evaluate`: accuracy and open-set figures of a bundle or .tflite on a dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from host_training.cli import log


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `evaluate` and its options on the subcommand table."""
    e = sub.add_parser("evaluate", help="accuracy of a bundle or .tflite on a class-folder dataset")
    e.add_argument("--model", required=True, help="bundle folder or .tflite")
    e.add_argument("--labels", help="labels file for a bare .tflite")
    e.add_argument("--data", help="folder with one subfolder per class")
    e.add_argument("--negatives", help="folder of images that are none of the classes: "
                                       "reports how many the bundle accepts")
    e.add_argument("--other", help="folder of real notes that are not ours (irr/, eur/, "
                                   "vnd-phone/): accepted share of its evaluation part, "
                                   "untaught vnd-phone notes refused, known ones right/wrong")
    e.add_argument("--untaught", help="folder with one subfolder per note the model was never "
                                      "taught (e.g. a class left out with train --leave-out): "
                                      "the share accepted, what it is taken for; with --data "
                                      "(the taught classes' validation photos) also the curve "
                                      "of untaught accepted against known notes kept")
    e.add_argument("--replay-frames", type=int, default=8, metavar="N",
                   help="with --other: each photo also as a replay of N frames through the "
                        "device's decider (K of N frames make an event), so false-accepts "
                        "are counted per object as well as per frame; 0 turns it off "
                        "(default: 8)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=run)


def _print_accuracy(result: dict) -> None:
    """Accuracy, the decision's shares, per-class precision/recall and the confusion matrix."""
    d = result["decision"]
    print(f"accuracy {result['accuracy']:.4f} on {result['n']} images | accepted right "
          f"{d['accepted_right']:.4f}, as a wrong value {d['accepted_wrong']:.4f}, "
          f"rejected {d['rejected_notes']:.4f}")
    for c, r in result["per_class"].items():
        print(f"  {c:20s} precision {r['precision']:.3f} recall {r['recall']:.3f} "
              f"(n={r['support']})")
    print("confusion matrix (rows true, columns predicted):")
    for c, row in zip(result["labels"], result["confusion_matrix"], strict=True):
        print(f"  {c:20s} {row}")


def run(a: argparse.Namespace) -> int:
    """Evaluate and print the figures, as text or as one JSON object."""
    from host_training.train.evaluate import evaluate_model

    result = evaluate_model(Path(a.model), Path(a.data) if a.data else None,
                            Path(a.labels) if a.labels else None,
                            Path(a.negatives) if a.negatives else None,
                            Path(a.other) if a.other else None, max(0, a.replay_frames),
                            Path(a.untaught) if a.untaught else None)
    if a.json:
        print(json.dumps(result))
        return 0
    if not result["has_decision"]:
        log.warning("%s has no decision section: no reject path; judged as top-1 >= 0.7 and "
                    "not background", a.model)
    if "negatives" in result:
        print(f"far: negatives {result['negatives']['false_accept']:.4f} accepted as a note "
              f"(n={result['negatives']['n_negatives']})")
    from host_training.openset import nearood, other_notes

    if result.get("other_notes"):
        print(other_notes.summary(result["other_notes"]))
    if result.get("untaught"):
        from host_training.openset import untaught

        print(untaught.summary(result["untaught"]))
    if result.get("other_notes_events"):
        from host_training.openset import replays

        print(replays.summary(result["other_notes_events"]))
    print(nearood.summary(result.get("lodo")) + ("" if result.get("lodo") else
                                                 " (the bundle's manifest has no figures)"))
    if result.get("n"):
        _print_accuracy(result)
    return 0
