"""Whole-recipe leave-one-series-out: a finished bundle meets a photo series it never saw.

The frozen-feature figures (calibrate.loso) show that the features carry the camera and
setting of a series; this is the same question asked of the network a device runs: trained
by the whole recipe without one series (`coral-train train --leave-out-series NAME`), how
often does it accept that series' notes right, and what does it take them for? The
dangerous answer is "accepted as a wrong value" (a 500,000 paid out as 100,000, or worse,
the other way round), so it is reported per class with the values it was taken for.
"""

from __future__ import annotations

from collections.abc import Sequence

from host_training.openset.calibrate import REJECTED
from host_training.openset.untaught import pct as _pct
from host_training.openset.untaught import round4 as _r


def figures(result: dict, series: str, unknown: Sequence[str] = ()) -> dict:
    """From train.evaluate.evaluate_model's result on the held-out series: the shares and,
    per class, what its accepted-as-wrong photos were taken for."""
    d = result["decision"]
    conf = d["confusion"]
    cols = conf["columns"]
    per_class = {}
    for row, counts in zip(conf["rows"], conf["matrix"], strict=True):
        n = sum(counts)
        if not n or row not in result["per_class"]:
            continue
        wrong = {c: k for c, k in zip(cols, counts, strict=True)
                 if k and c not in (row, REJECTED)}
        per_class[row] = {"n": n, "accepted_right": round(counts[cols.index(row)] / n, 4),
                          "accepted_wrong": round(sum(wrong.values()) / n, 4),
                          "taken_for": dict(sorted(wrong.items(), key=lambda kv: -kv[1]))}
    return {"series": series, "n": result["n"], "top1": round(result["accuracy"], 4),
            "accepted_right": _r(d["accepted_right"]), "accepted_wrong": _r(d["accepted_wrong"]),
            "rejected": _r(d["rejected_notes"]), "per_class": per_class,
            "not_measured": list(unknown)}


def section(fig: dict) -> list[str]:
    """report.md lines: the held-out series through the bundle's operating point."""
    lines = ["", f"## Whole recipe, an unseen photo series: {fig['series']}", "",
             f"This bundle was trained without the `{fig['series']}` series "
             "(`--leave-out-series`); its photos are another camera and setting. Through the "
             f"bundle's operating point, {fig['n']} photos: top-1 {_pct(fig['top1'])}, "
             f"accepted right {_pct(fig['accepted_right'])}, **accepted as a wrong value "
             f"{_pct(fig['accepted_wrong'])}**, refused {_pct(fig['rejected'])}.", "",
             "| class | photos | accepted right | accepted as a wrong value | taken for |",
             "|---|---:|---:|---:|---|"]
    for c, r in fig["per_class"].items():
        taken = ", ".join(f"{k} {v}" for k, v in r["taken_for"].items()) or "—"
        lines.append(f"| {c} | {r['n']} | {_pct(r['accepted_right'])} | "
                     f"{_pct(r['accepted_wrong'])} | {taken} |")
    if fig["not_measured"]:
        lines += ["", f"Not measured (no photos outside the series, so not taught): "
                      f"{', '.join(fig['not_measured'])}."]
    return lines


def summary(fig: dict) -> str:
    """One line for the training's output."""
    return (f"unseen series {fig['series']} (whole recipe): {fig['n']} photos, top-1 "
            f"{_pct(fig['top1'])}, accepted right {_pct(fig['accepted_right'])}, accepted as "
            f"a wrong value {_pct(fig['accepted_wrong'])}")
