"""Tighten a finished bundle's operating point without retraining (`coral-train retune`).

The network stays; only the manifest's per-class score thresholds change: each is raised
to the top-1 score that the share `score_keep` of the correctly classified validation
notes reaches (calibrate.score_floor), never lowered, and the OOD rule is kept. That is
the score rule a training applies with `--score-keep` (its thresholds are the larger of
the false-accept threshold and that floor), so a bundle trained before the option, or one
an operator wants stricter in the field, gets the same rule from its validation photos —
in seconds, not the 40 minutes of a training.

The new bundle is re-measured through the new point with `coral-train evaluate`'s own
function (validation photos, and real notes that are not ours and negatives when given);
those figures replace the trained point's in the manifest and lead report.md. Figures
that need the training data (validation negatives, the leave-one-denomination-out proxy)
stay as measured at the trained point and are named as such: raising thresholds can only
lower an accepted share, so they are upper bounds.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.bundle import MANIFEST, load_bundle, write_manifest
from device.errors import ConfigError, CoralError, ModelError
from device.openset import OperatingPoint, operating_point
from host_training.openset import calibrate
from host_training.train.dataset import DatasetError

log = logging.getLogger(__name__)
NOT_REMEASURED = ("open_set.validation_negatives", "open_set.validation_all",
                  "open_set.lodo", "open_set.untaught", "open_set.held_out_series")
HEADING = "## Operating point retuned"
TRAINING_FOLLOWS = "The sections below are the training's"


@dataclass(frozen=True)
class Tightened:
    """The new point and what changed: the floor and each class's old and new threshold."""

    point: OperatingPoint
    floor: float
    n_correct: int
    changed: dict[str, tuple[float, float]]


def tighten(point: OperatingPoint, labels: Sequence[str], outputs: Sequence[np.ndarray],
            y: np.ndarray, score_keep: float) -> Tightened:
    """Every accepted class's threshold raised to the floor (none lowered; at most 0.999).
    `outputs`/`y`: the int8 model's outputs on validation notes and their class ids."""
    never = {*point.background_labels, *point.unknown_labels, *point.refused_labels}
    scores = np.asarray(outputs[0])
    top = scores.argmax(1)
    positive = ~np.isin(y, [i for i, lb in enumerate(labels) if lb in never])
    correct = positive & (top == y)
    if not correct.any():
        raise DatasetError("retune: the model classifies none of the validation photos "
                           "right; check that --val-data holds the model's classes")
    floor = calibrate.score_floor(scores, top, correct, score_keep)
    thresholds, changed = {}, {}
    for lb in labels:
        if lb in never:
            continue
        old = point.class_thresholds.get(lb, point.threshold)
        thresholds[lb] = new = round(max(old, min(floor, 0.999)), 4)
        if new != old:
            changed[lb] = (old, new)
    new_point = point.model_copy(update={"class_thresholds": thresholds})
    return Tightened(new_point, floor, int(correct.sum()), changed)


def retune(model: Path, val_data: Path, score_keep: float, out: Path, version: str | None,
           other: Path | None = None, negatives: Path | None = None) -> dict:
    """Write `out`: `model` with its thresholds tightened and its figures re-measured.
    Returns the manifest's new `retuned` section. `out` may be `model` itself: the old
    bundle is swapped out only once the new one is complete and sealed."""
    from host_training.train.bundle_files import replace_dir
    from host_training.train.dataset import load_dataset
    from host_training.train.evaluate import evaluate_model, open_classifier, tflite_outputs

    out = _check_out(Path(out))
    bundle = _load(Path(model))
    try:
        point = operating_point(bundle.manifest)
    except ValueError as exc:
        raise ModelError(f"{model}: {exc}; train the bundle again") from None
    if point is None:
        raise DatasetError(f"{model}: the manifest has no decision section to tighten; "
                           "train the bundle again with coral-train train")
    clf = open_classifier(model)
    names = list(bundle.labels)
    roi = bundle.manifest.get("training", {}).get("settings", {}).get("roi")
    ds = load_dataset(val_data, clf.width, clf.resize_policy, class_names=names,
                      roi=tuple(roi) if roi else None)  # as the training saw them
    t = tighten(point, names, tflite_outputs(clf, ds.images, "validation"), ds.labels,
                score_keep)
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("files", "format",
                                                                      "created")}
    before = {"version": manifest.get("version"),
              "validation": manifest.get("open_set", {}).get("validation", {}).get("ours")}
    trained = str(before["version"]).split("+score")[0]
    manifest["version"] = version or f"{trained}+score{score_keep:g}"
    manifest["decision"] = t.point.model_dump(mode="json")
    try:
        scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.retune-", dir=out.parent))
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write beside it ({exc.strerror}); choose a "
                         "folder you can write to") from None
    stage = scratch / "bundle"
    try:
        _copy_files(bundle, stage)
        write_manifest(stage, manifest)
        fig = evaluate_model(stage, val_data, None, negatives, other, 8 if other else 0)
        section = {"from_version": before["version"], "score_keep": score_keep,
                   "score_floor": t.floor, "n_correct_validation": t.n_correct,
                   "val_data": str(val_data),
                   "changed": {k: {"from": a, "to": b} for k, (a, b) in t.changed.items()},
                   "validation_before": _brief(before["validation"]),
                   "validation": _brief(fig["decision"]),
                   "not_remeasured": list(NOT_REMEASURED)}
        opens = manifest.setdefault("open_set", {})
        opens.setdefault("validation", {})["ours"] = fig["decision"]
        opens.setdefault("thresholds", {})["ours"] = manifest["decision"]
        if "ood_kind" in opens:
            opens["ood_kind"] = f"{opens['ood_kind'].split(' + ')[0]} + top-1 score keeping " \
                                f"{score_keep:.2f}"
        if "other_notes" in fig:
            opens["other_notes"] = fig["other_notes"]
            section["other_notes_events"] = fig.get("other_notes_events")
        if "negatives" in fig:
            opens.setdefault("negative_set", {})["ours"] = fig["negatives"]
        manifest["retuned"] = section
        _report(stage, manifest, section, fig)
        write_manifest(stage, manifest)
        load_bundle(stage)  # sealed and loadable, before it replaces anything
        replace_dir(stage, out)
    except OSError as exc:
        raise CoralError(f"retune: could not write {out}: {exc.strerror or exc}; the old "
                         f"bundle is kept (as .{out.name}.old beside it if the swap itself "
                         "failed)") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return section


def _check_out(out: Path) -> Path:
    """--out, checked before any work: a folder (or nothing yet) in an existing folder."""
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: give a folder for the new bundle")
    if out == out.parent or not out.parent.is_dir():
        raise ConfigError(f"--out {out}: its parent folder does not exist; create it first")
    return out


def _load(model: Path):
    if not model.exists():
        raise DatasetError(f"--model {model}: not found; give a bundle folder")
    if not (model / MANIFEST).is_file():
        raise DatasetError(f"{model}: retune needs a bundle folder (manifest.json beside the "
                           "model), not a bare .tflite")
    return load_bundle(model)


def _copy_files(bundle, stage: Path) -> None:
    """Only what the manifest seals (no stray editor backups or half-written files)."""
    for rel in bundle.manifest["files"]:
        dest = stage / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(bundle.root) / rel, dest)


def _brief(decision: dict | None) -> dict | None:
    if not decision:
        return None
    return {k: decision.get(k) for k in ("n_notes", "accepted_right", "accepted_wrong",
                                         "rejected_notes")}


def _report(stage: Path, manifest: dict, section: dict, fig: dict) -> None:
    """report.md: the retune section first (the current figures), the training's after."""
    from host_training.openset import other_notes, replays
    from host_training.openset.untaught import pct

    path = stage / "report.md"
    text = path.read_text() if path.is_file() else ""
    lines = text.splitlines()
    body = lines[1:] if lines and lines[0].startswith("# ") else lines
    if body and any(x.startswith(HEADING) for x in body[:4]):  # retuned before: replace it
        end = next((i for i, x in enumerate(body) if x.startswith(TRAINING_FOLLOWS)), -1)
        body = body[end + 1:] if end >= 0 else body
    b, a = section["validation_before"] or {}, section["validation"]
    changed = ", ".join(f"{k} {v['from']} → {v['to']}" for k, v in section["changed"].items())
    new = [f"# {manifest.get('name', '')} v{manifest['version']}", "",
           f"{HEADING} (from v{section['from_version']})", "",
           f"`coral-train retune`: the same network; every class's score threshold raised to "
           f"the top-1 score {section['score_floor']:.4f} that {pct(section['score_keep'])} of "
           f"the {section['n_correct_validation']} correctly classified validation notes "
           f"reach (none lowered; the OOD rule unchanged): {changed or 'no threshold changed'}.",
           "", f"Validation notes ({a['n_notes']}): accepted right "
           f"{pct(b.get('accepted_right'))} → {pct(a['accepted_right'])}, as a wrong value "
           f"{pct(b.get('accepted_wrong'))} → {pct(a['accepted_wrong'])}."]
    if fig.get("other_notes"):
        line = other_notes.summary(fig["other_notes"])
        new += ["", line[:1].upper() + line[1:] + "."]
    if fig.get("other_notes_events"):
        new += ["", "P" + replays.summary(fig["other_notes_events"])[1:] + "."]
    if fig.get("negatives"):
        new += ["", f"Far, negatives: {pct(fig['negatives']['false_accept'])} of "
                    f"{fig['negatives']['n_negatives']} accepted."]
    new += ["", f"{TRAINING_FOLLOWS}, measured at the trained point; "
                "those re-measured here (validation, real notes that are not ours, negatives) "
                "are superseded by the figures above, the others "
                f"({', '.join(section['not_remeasured'])}) can only have fallen, since no "
                "threshold was lowered.", ""]
    path.write_text("\n".join(new + body) + "\n")
