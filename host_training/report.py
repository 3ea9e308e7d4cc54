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


def plot_confusion(matrix: list[list[int]], labels: list[str], out: Path, title: str) -> None:
    m = np.asarray(matrix)
    size = max(4, 0.7 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
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
    ]
    (out / "report.md").write_text("\n".join(lines))
