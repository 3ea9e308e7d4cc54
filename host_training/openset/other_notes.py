"""Real notes that are not one of ours (../shared/datasets/banknotes-other), split by a fixed
rule into a part that may be trained on and a part that is only ever evaluated on.

The split rule (documented, fixed, no randomness): within each currency folder (`irr/`,
`eur/`), a photo's denomination is its subfolder (`irr/toman_1000/…`) or the leading number
of its file name (`eur/20__4.jpg`, `eur/5-50.jpg` -> 5). The denominations sorted by value
alternate: the 1st, 3rd, 5th … may be trained on, the 2nd, 4th … are evaluation only.
Splitting by denomination keeps every shot of one note on one side (the folders hold
bursts of the same note) and makes the evaluation part designs the model has never seen,
which is what an untaught note is. irr: train 100, 500, 2000, 10000, 100000 toman; eval
200, 1000, 5000, 50000. eur: train 5, 20; eval 10, 50.

`vnd-phone/` is never trained on: its classes the model does not know (1000_vnd, 2000_vnd)
are untaught notes that must all be refused; the others are the known notes from another
phone (accepted right, accepted as a wrong value: 500,000 taken for 100,000).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device.images import IMAGE_SUFFIXES, decode_image
from device.processing import resize
from host_training.train.dataset import DatasetError

log = logging.getLogger(__name__)
CURRENCIES = ("irr", "eur")
PHONE = "vnd-phone"
TRAIN, EVAL = "train", "eval"
_VALUE = re.compile(r"(\d+)")


def denomination(rel: str) -> int | None:
    """The value of a photo at `rel` (relative to the banknotes-other folder)."""
    parts = Path(rel).parts
    name = parts[1] if len(parts) > 2 else Path(parts[-1]).stem
    m = _VALUE.search(name)
    return int(m.group(1)) if m else None


def split_part(rel: str, values: Sequence[int]) -> str:
    """TRAIN or EVAL for a photo, given every denomination of its currency (the rule above)."""
    v = denomination(rel)
    order = sorted(set(values))
    return TRAIN if v is None or order.index(v) % 2 == 0 else EVAL


@dataclass
class OtherNotes:
    """Photos (RGB at the model's size) by group: `<currency>/train`, `<currency>/eval`,
    `vnd-phone/untaught`, `vnd-phone/known` (with their class names)."""

    images: dict[str, list[np.ndarray]] = field(default_factory=dict)
    paths: dict[str, list[str]] = field(default_factory=dict)
    labels: dict[str, list[str]] = field(default_factory=dict)
    aspects: dict[str, list[float]] = field(default_factory=dict)  # width / height, as taken

    def add(self, group: str, image: np.ndarray, rel: str, label: str, aspect: float) -> None:
        self.images.setdefault(group, []).append(image)
        self.paths.setdefault(group, []).append(rel)
        self.labels.setdefault(group, []).append(label)
        self.aspects.setdefault(group, []).append(aspect)

    def array(self, group: str, size: int) -> np.ndarray:
        imgs = self.images.get(group, [])
        return np.stack(imgs) if imgs else np.zeros((0, size, size, 3), np.uint8)


def _files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower()
                  in IMAGE_SUFFIXES)


def load_other(root: Path, size: int, known: Sequence[str], parts: Sequence[str] = (TRAIN,
               EVAL), resize_policy: str = "stretch") -> OtherNotes:
    """The banknotes-other photos at the model's input size, grouped (see OtherNotes).
    `known`: the model's labels (which vnd-phone classes are untaught); `parts`: which
    parts of irr/eur to load."""
    root = Path(root)
    if not root.is_dir() or not any((root / d).is_dir() for d in (*CURRENCIES, PHONE)):
        raise DatasetError(f"--other {root}: expected a folder holding irr/, eur/ and/or "
                           f"vnd-phone/ (../shared/datasets/banknotes-other)")
    out = OtherNotes()
    for cur in CURRENCIES:
        files = _files(root / cur) if (root / cur).is_dir() else []
        rels = [f.relative_to(root).as_posix() for f in files]
        values = [v for v in (denomination(r) for r in rels) if v is not None]
        for f, rel in zip(files, rels, strict=True):
            part = split_part(rel, values)
            if part in parts:
                _add(out, f"{cur}/{part}", f, rel, cur, size, resize_policy)
    if (root / PHONE).is_dir() and EVAL in parts:  # never trained on: evaluation only
        for f in _files(root / PHONE):
            label = f.parent.name
            group = f"{PHONE}/known" if label in known else f"{PHONE}/untaught"
            _add(out, group, f, f.relative_to(root).as_posix(), label, size, resize_policy)
    log.info("other notes from %s: %s", root, {g: len(v) for g, v in out.images.items()})
    return out


def _add(out: OtherNotes, group: str, f: Path, rel: str, label: str, size: int,
         policy: str) -> None:
    rgb = decode_image(f)
    if rgb is None:
        log.warning("skipping %s: not a readable image", f)
        return
    out.add(group, resize(rgb, size, size, policy), rel, label, rgb.shape[1] / rgb.shape[0])


def figures(verdicts_by_group: dict[str, list], other: OtherNotes) -> dict:
    """Per group: n and accepted share; for the known vnd-phone notes accepted right and
    as a wrong value with what each class was taken for; for untaught ones refused x of n."""
    out: dict[str, dict] = {}
    for g, verdicts in verdicts_by_group.items():
        acc = np.array([v.accepted for v in verdicts], bool)
        r: dict = {"n": len(verdicts), "accepted": round(float(acc.mean()), 4) if len(acc)
                   else None, "taken_for": dict(Counter(v.label for v in verdicts
                                                        if v.accepted).most_common())}
        if g.endswith("/known"):
            truth = other.labels[g]
            right = np.array([v.label == t for v, t in zip(verdicts, truth, strict=True)])
            r["accepted_right"] = round(float((acc & right).mean()), 4)
            r["accepted_wrong"] = round(float((acc & ~right).mean()), 4)
            r["by_class"] = {}
            for c in sorted(set(truth)):
                rows = [v for v, t in zip(verdicts, truth, strict=True) if t == c]
                r["by_class"][c] = {
                    "n": len(rows), "accepted_right": sum(v.accepted and v.label == c
                                                          for v in rows),
                    "taken_for": dict(Counter(v.label for v in rows
                                              if v.accepted and v.label != c))}
        if g.endswith("/untaught"):
            r["refused"] = int((~acc).sum())
        out[g] = r
    return out


def section(fig: dict | None, root: str | None = None) -> list[str]:
    """report.md lines: real notes that are not ours (near), by group."""
    if not fig:
        return []
    lines = ["## Near: real notes that are not ours", "",
             f"Photos from {root or 'banknotes-other'}; irr/eur split by denomination "
             "(host_training/openset/other_notes.py): only the evaluation part is shown, never "
             "trained on. `vnd-phone/untaught` are VND notes the model was never taught: "
             "every one must be refused.", "",
             "| group | n | accepted as a note | taken for |", "|---|---:|---:|---|"]
    for g, r in fig.items():
        if g.endswith("/train"):
            continue
        taken = ", ".join(f"{k} {v}" for k, v in r["taken_for"].items()) or "–"
        extra = f" (refused {r['refused']} of {r['n']})" if "refused" in r else ""
        lines.append(f"| {g} | {r['n']} | {_pct(r['accepted'])}{extra} | {taken} |")
    known = fig.get(f"{PHONE}/known")
    if known:
        lines += ["", f"Known notes from another phone: accepted right "
                  f"{_pct(known['accepted_right'])}, accepted as a wrong value "
                  f"{_pct(known['accepted_wrong'])}.", "",
                  "| class | n | accepted right | accepted as |", "|---|---:|---:|---|"]
        for c, r in known["by_class"].items():
            wrong = ", ".join(f"{k} {v}" for k, v in r["taken_for"].items()) or "–"
            lines.append(f"| {c} | {r['n']} | {r['accepted_right']} | {wrong} |")
    return [*lines, ""]


def summary(fig: dict) -> str:
    """One console line."""
    parts = []
    for g, r in fig.items():
        if g.endswith("/train"):
            continue
        if "refused" in r:
            parts.append(f"{g} refused {r['refused']}/{r['n']}")
        elif "accepted_right" in r:
            parts.append(f"{g} accepted right {_pct(r['accepted_right'])}, wrong value "
                         f"{_pct(r['accepted_wrong'])} (n={r['n']})")
        else:
            parts.append(f"{g} accepted {_pct(r['accepted'])} (n={r['n']})")
    return "near (real notes not ours): " + "; ".join(parts)


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"
