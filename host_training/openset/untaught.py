"""Whole-recipe near-OOD: what a finished bundle does with notes it was never taught.

The leave-one-denomination-out proxy (nearood.py) trains a linear head on frozen features;
it reproduces the failure but is not the fine-tuned network a device runs. This module
measures the real thing: a bundle trained by the whole recipe without some classes
(`coral-train train --leave-out CLASS`) meets the photos of those classes, which it must
refuse, next to its own validation photos, which it must accept right. The figures go
through the bundle's operating point (device.policy.judge, via calibrate.judge_all), and
a curve re-calibrates the same rule at lower shares of correct notes kept, so the cost of
refusing more untaught notes is shown in known notes handed back. The share kept is a
quantile, not an absolute threshold, which is what can carry from a fold to the flagship:
`keep_for_target` is the share at which the untaught notes fall to the target.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence

import numpy as np

from device.openset import OperatingPoint
from host_training.openset import calibrate

CURVE_KEEPS = (0.99, 0.95, 0.9, 0.85, 0.8, 0.7)
TARGET = 0.05  # the target: an untaught denomination accepted at most 5 % of the time
SEARCH_KEEPS = tuple(round(k, 2) for k in np.arange(0.99, 0.49, -0.01))
BOTH = "class_mean_cosine+max_softmax"  # both scores, each keeping the same share


def measure(point: OperatingPoint, labels: Sequence[str], val_outputs: Sequence[np.ndarray] | None,
            val_y: np.ndarray | None, untaught_outputs: Sequence[np.ndarray],
            untaught_names: Sequence[str], max_false_accept: float) -> dict:
    """Figures for one bundle: per untaught class the accepted share and what it was taken
    for; the validation notes' accepted right and wrong; AUROC of the bundle's OOD score and
    of max-softmax (correct validation notes against the untaught ones); and, when
    validation outputs are given, the curve and the share kept that reaches TARGET."""
    never = [*point.background_labels, *point.unknown_labels, *point.refused_labels]
    names = np.asarray(untaught_names)
    verdicts = calibrate.judge_all(point, labels, untaught_outputs)
    acc = np.array([v.accepted for v in verdicts], bool)
    per_class = {}
    for c in sorted(set(untaught_names)):
        sel = names == c
        taken = Counter(v.label for v, s in zip(verdicts, sel, strict=True) if s and v.accepted)
        per_class[c] = {"n": int(sel.sum()), "accepted": _share(acc[sel]),
                        "taken_for": dict(taken.most_common())}
    out = {"untaught": per_class, "untaught_accepted": _share(acc), "n_untaught": len(acc),
           "target": TARGET}
    if val_outputs is None or val_y is None or not len(val_y):
        out["validation"] = None
        return out
    val = calibrate.decision_report(calibrate.judge_all(point, labels, val_outputs), val_y,
                                    labels, never)
    out["validation"] = {k: val[k] for k in ("n_notes", "accepted_right", "accepted_wrong")}
    correct = val_outputs[0].argmax(1) == val_y
    kind = point.ood.kind if point.ood else "max_softmax"
    out["auroc"] = {k: round4(calibrate.auroc(calibrate.ood_values(k, val_outputs)[correct],
                                              calibrate.ood_values(k, untaught_outputs)))
                    for k in dict.fromkeys((kind, "max_softmax"))}

    @functools.cache  # the curve's keeps are among the search's: each point calibrated once
    def at(rule: str, keep: float) -> dict:
        kind, score_keep = ("class_mean_cosine", keep) if rule == BOTH else (rule, 1.0)
        p = calibrate.calibrate(val_outputs, val_y, labels, point.background_labels,
                                point.unknown_labels, kind, keep, max_false_accept,
                                point.refused_labels, score_keep)
        known = calibrate.decision_report(calibrate.judge_all(p, labels, val_outputs), val_y,
                                          labels, never)
        taken = np.array([v.accepted for v in calibrate.judge_all(p, labels, untaught_outputs)])
        return {"keep": keep, "untaught_accepted": _share(taken),
                "accepted_right": round4(known["accepted_right"]),
                "accepted_wrong": round4(known["accepted_wrong"])}

    def reaching(rule: str) -> dict | None:
        return next((r for r in (at(rule, k) for k in SEARCH_KEEPS)
                     if r["untaught_accepted"] is not None
                     and r["untaught_accepted"] <= TARGET), None)

    # the bundle's OOD rule, max-softmax and (with a cosine output) both together beside
    # it: which score carries over to a fold
    rules = list(dict.fromkeys((kind, "max_softmax", *((BOTH,) if len(val_outputs) > 1
                                                        and kind == "class_mean_cosine"
                                                        else ()))))
    out["rule"] = kind
    out["curve"] = [at(kind, k) for k in CURVE_KEEPS]
    out["keep_for_target"] = reaching(kind)
    out["other_rules"] = {r: {"curve": [at(r, k) for k in CURVE_KEEPS],
                              "keep_for_target": reaching(r)} for r in rules[1:]}
    return out


def section(fig: dict, left_out: Sequence[str] = ()) -> list[str]:
    """report.md lines: the untaught classes' table, then the curve."""
    title = ", ".join(left_out) or ", ".join(fig["untaught"])
    lines = ["", f"## Whole recipe, never taught: {title}", "",
             "This bundle was trained by the whole recipe without these classes "
             "(`--leave-out`); their photos must all be refused. Through the bundle's "
             "operating point:", "",
             "| untaught class | photos | accepted | taken for |", "|---|---:|---:|---|"]
    for c, r in fig["untaught"].items():
        taken = ", ".join(f"{k} {v}" for k, v in r["taken_for"].items()) or "—"
        lines.append(f"| {c} | {r['n']} | {pct(r['accepted'])} | {taken} |")
    v = fig.get("validation")
    if v:
        lines += ["", f"Validation notes of the taught classes ({v['n_notes']}): accepted right "
                      f"{pct(v['accepted_right'])}, accepted as a wrong value "
                      f"{pct(v['accepted_wrong'])}. AUROC, correct validation notes against "
                      "the untaught ones: " + ", ".join(f"{k} {a}" for k, a in
                                                        fig["auroc"].items()) + ".", "",
                  f"The {fig['rule']} rule re-calibrated to keep less of the correct notes "
                  "(the cost of refusing more untaught notes):", "", *_curve_table(fig["curve"])]
        for rule, o in fig.get("other_rules", {}).items():
            lines += ["", f"The same curve for the {rule} rule:", "", *_curve_table(o["curve"])]
        lines += ["", summary(fig)]
    return lines


def summary(fig: dict) -> str:
    """One line: the untaught notes accepted, and at which share of correct notes kept each
    rule brings them to the target (and what that costs in known notes accepted right)."""
    head = (f"never taught (whole recipe): {pct(fig['untaught_accepted'])} of "
            f"{fig['n_untaught']} photos accepted (target ≤ {pct(fig['target'])})")
    if not fig.get("validation"):
        return head + "; give --val-data for the curve"
    rules = {fig["rule"]: fig.get("keep_for_target"),
             **{r: o["keep_for_target"] for r, o in fig.get("other_rules", {}).items()}}
    parts = [f"{rule} reaches it keeping {k['keep']:.2f} of correct notes (known accepted "
             f"right {pct(k['accepted_right'])}, untaught {pct(k['untaught_accepted'])})"
             if k else f"{rule} does not reach it down to {SEARCH_KEEPS[-1]:.2f} kept"
             for rule, k in rules.items()]
    return head + "; " + "; ".join(parts)


def _curve_table(curve: list[dict]) -> list[str]:
    return ["| correct notes kept | untaught accepted | known accepted right | "
            "known accepted as a wrong value |", "|---:|---:|---:|---:|",
            *(f"| {r['keep']:.2f} | {pct(r['untaught_accepted'])} | "
              f"{pct(r['accepted_right'])} | {pct(r['accepted_wrong'])} |" for r in curve)]


def _share(a: np.ndarray) -> float | None:
    return round(float(a.mean()), 4) if len(a) else None


def round4(v) -> float | None:
    return None if v is None else round(float(v), 4)


def pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"
