"""Human-readable outputs of a training run: curves, confusion matrix, report.md."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on a workstation shell or in CI
import matplotlib.pyplot as plt
import numpy as np


def plot_curves(phases: dict[str, dict[str, list[float]]], out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    offset = 0
    for phase, h in phases.items():
        epochs = np.arange(offset + 1, offset + 1 + len(h.get("loss", [])))
        for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
            ax.plot(epochs, h.get(key, []), label=f"{phase} train")
            ax.plot(epochs, h.get(f"val_{key}", []), "--", label=f"{phase} val")
        offset += len(epochs)
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def plot_confusion(confusion: dict, out: Path, title: str) -> None:
    """confusion: {"rows": true classes, "columns": outcomes, "matrix": counts}."""
    m = np.asarray(confusion["matrix"])
    rows, cols = confusion["rows"], confusion["columns"]
    size = max(4, 0.7 * len(cols) + 2)
    fig, ax = plt.subplots(figsize=(size, max(3, 0.7 * len(rows) + 2)))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > m.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def summary_table(float_m: dict, int8_m: dict) -> str:
    """A Markdown table of per-class precision/recall, float vs int8."""
    rows = ["| class | support | float P | float R | int8 P | int8 R |",
            "|---|---:|---:|---:|---:|---:|"]
    for c, f in float_m["per_class"].items():
        q = int8_m["per_class"][c]
        rows.append(f"| {c} | {f['support']} | {f['precision']:.3f} | {f['recall']:.3f} | "
                    f"{q['precision']:.3f} | {q['recall']:.3f} |")
    rows.append(f"| **all** | {float_m['n']} | acc {float_m['accuracy']:.4f} | | "
                f"acc {int8_m['accuracy']:.4f} | |")
    return "\n".join(rows)


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def confusion_table(confusion: dict) -> list[str]:
    cols = confusion["columns"]
    lines = ["| true \\ outcome | " + " | ".join(cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for r, row in zip(confusion["rows"], confusion["matrix"], strict=True):
        lines.append(f"| {r} | " + " | ".join(str(v) for v in row) + " |")
    return lines


def _refused(decision: dict) -> str:
    if not decision.get("refused_labels"):
        return ""
    return f"; refused (learned in order to refuse them): {decision['refused_labels']}"


def open_set_section(manifest: dict) -> list[str]:
    """The reject path's figures: operating point, baselines, negatives, leave-one-series-out."""
    o = manifest.get("open_set")
    if not o:
        return []
    d = manifest["decision"]
    ood = d.get("ood") or {}
    lines = ["## Open world (far): what the bundle accepts that is not a note", "",
             "Scenes with no note and other objects (validation negatives, the negative set). "
             "Untaught notes are a different question, answered apart under *Near* below.", "",
             f"Operating point (manifest `decision`, chosen on validation data): class "
             f"thresholds {d['class_thresholds']}, never accepted "
             f"{d['background_labels'] + d['unknown_labels'] or 'nothing (no background class)'}"
             f"{_refused(d)}"
             f", OOD rule {ood.get('kind', 'none')} ≤ {ood.get('threshold', '–')}.", "",
             "| operating point | notes: top-1 | accepted right | accepted as a wrong value | "
             "notes rejected | validation negatives accepted | negative set accepted |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    names = {"ours": f"this bundle ({o['ood_kind']})", "max_softmax":
             "baseline: max-softmax, calibrated the same way", "top1_0.7": "top-1 ≥ 0.7"}
    for key, label in names.items():
        v = o["validation"].get(key, {})
        vn = o["validation_negatives"].get(key, {})
        ns = o["negative_set"].get(key, {})
        lines.append(f"| {label} | {_pct(v.get('top1'))} | {_pct(v.get('accepted_right'))} | "
                     f"{_pct(v.get('accepted_wrong'))} | {_pct(v.get('rejected_notes'))} | "
                     f"{_pct(vn.get('false_accept'))} (n={vn.get('n_negatives', 0)}) | "
                     f"{_pct(ns.get('false_accept'))} (n={ns.get('n_negatives', 0)}) |")
    if o["negative_set"].get("ours", {}).get("by_group"):
        lines += ["", "Negative set by group (accepted as a note):", "",
                  "| group | n | this bundle | max-softmax | top-1 ≥ 0.7 |",
                  "|---|---:|---:|---:|---:|"]
        for g, r in o["negative_set"]["ours"]["by_group"].items():
            others = [o["negative_set"][k]["by_group"][g]["false_accept"]
                      for k in ("max_softmax", "top1_0.7")]
            lines.append(f"| {g} | {r['n']} | {_pct(r['false_accept'])} | {_pct(others[0])} | "
                         f"{_pct(others[1])} |")
    auroc = {k: v for k, v in o.get("ood_auroc", {}).items() if v is not None}
    if auroc:
        lines += ["", "OOD score AUROC, correctly classified validation notes against the "
                  "negative set: " + ", ".join(f"{k} {v:.3f}" for k, v in auroc.items()) + "."]
    lines += ["", "Validation frames and validation negatives through the operating point "
              "(columns: what the bundle answers; `(rejected)` = no vote):", "",
              *confusion_table(o["validation_all"]["confusion"])]
    if o.get("loso"):
        lines += ["", "Leave-one-series-out (linear head on frozen ImageNet features, trained "
                  "on the other series' frames, crops and negatives; tested on every frame of "
                  "the held-out series), next to the same head on the ordinary split:", "",
                  "| held out | n | top-1 | per class recall | most often taken for |",
                  "|---|---:|---:|---|---|"]
        for k, r in o["loso"].items():
            per = ", ".join(f"{c} {v['recall']:.2f}" for c, v in r["per_class"].items())
            taken = ", ".join(f"{c} → {t} {n}" for c, v in r["per_class"].items()
                              for t, n in list(v.get("taken_for", {}).items())[:1]) or "–"
            lines.append(f"| {k} | {r['n']} | {_pct(r['accuracy'])} | {per} | {taken} |")
    lines += ["", "![operating curves](operating_curves.png)", ""]
    from host_training.openset import nearood, other_notes

    lines += nearood.section(o.get("lodo"))
    lines += other_notes.section(o.get("other_notes"), manifest["training"]["settings"]
                                 .get("other"))
    return lines


def write_report(out: Path, manifest: dict) -> None:
    m = manifest["metrics"]
    ds = manifest["dataset"]
    t = manifest["training"]
    lines = [
        f"# {manifest['name']} v{manifest['version']}",
        "",
        f"MobileNetV2 (alpha {t['settings']['alpha']}, {t['settings']['input_size']} px, weights "
        f"{t['settings']['weights']}), {len(manifest['labels'])} classes.",
        "",
        f"- validation accuracy: float **{m['float']['accuracy']:.4f}**, int8 "
        f"**{m['int8']['accuracy']:.4f}** (top-1 agreement {m['agreement']:.4f}, "
        f"n = {m['int8']['n']})",
        f"- train images: {sum(ds['train'].values())}, validation images: "
        f"{sum(ds['val'].values())}, skipped: {len(ds['skipped'])}",
        "- time: " + ", ".join(f"{k} {v:.1f} s" for k, v in t["seconds"].items()),
        "",
        summary_table(m["float"], m["int8"]),
        "",
        "![curves](training_curves.png) ![confusion](confusion_matrix.png)",
        "",
        *open_set_section(manifest),
        *series_section(ds.get("series")),
    ]
    (out / "report.md").write_text("\n".join(lines))


def series_section(series: dict | None) -> list[str]:
    """Training frames per photo series and class, with the shortcut warnings."""
    if not series or len(series["frames"]) < 2:
        return []
    classes = sorted({c for row in series["frames"].values() for c in row})
    lines = ["## Training frames by photo series", "",
             "| series | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for sr, row in sorted(series["frames"].items()):
        lines.append(f"| {sr} | " + " | ".join(str(row.get(c, 0)) for c in classes) + " |")
    lines += ["", *(f"**Warning**: {w}." for w in series["warnings"])]
    return lines
