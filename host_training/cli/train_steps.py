"""The steps of `coral-train train` around the pipeline: folders in, settings, figures out."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from host_training.cli import log

# the augmentation options (dests); the unset ones keep the settings' defaults
AUGMENTATIONS = ("rotation", "rot90", "zoom", "translate", "brightness", "contrast", "flip",
                 "perspective", "white_balance", "glare", "blur", "noise", "jpeg", "paste")


def check_folders(a: argparse.Namespace) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Images per folder and device, and the refused classes; a bad folder or a class both
    taught and refused fails here, before anything is built."""
    from host_training.train.dataset import DatasetError, data_sources, folder_classes

    sources = data_sources([*a.data, *(a.refuse or [])])
    refused = sorted({c for d in a.refuse or [] for c in folder_classes(d)})
    taught = {c for d in a.data for c in folder_classes(d)}
    missing = sorted(set(a.leave_out or ()) - taught)
    if missing:
        raise DatasetError(f"--leave-out {', '.join(missing)}: no such class in --data "
                           f"(its classes: {', '.join(sorted(taught))})")
    if a.leave_out_series:
        from host_training.train.samples import series_of

        folders = [*a.data, *([a.val_data] if a.val_data else [])]
        if not any(series_of(f) == a.leave_out_series for d in folders for f in
                   (p.name for p in Path(d).rglob("*") if p.is_file())):
            raise DatasetError(f"--leave-out-series {a.leave_out_series}: no photo of that "
                               "series in --data or --val-data (series are told by file "
                               "name; see host_training/train/samples.py:series_of)")
    if set(refused) & taught:
        raise DatasetError(f"class(es) {sorted(set(refused) & taught)} are in --data and in "
                           "--refuse: a class is either accepted or refused; remove it from one")
    return sources, refused


@dataclass(frozen=True)
class Folders:
    """What training reads: the class folders, the validation folder (None: a split of
    data) and, with --leave-out, the left-out classes' photos (None without)."""

    data: Path
    val_data: Path | None
    untaught: Path | None
    held_out: Path | None = None  # --leave-out-series: that series' photos


@contextmanager
def training_folders(a: argparse.Namespace) -> Iterator[Folders]:
    """The given folders, or temporary unions of links to them (several --data, a class
    left out), removed afterwards."""
    from host_training.train.dataset import union_folder
    from host_training.train.samples import series_of

    left, series = set(a.leave_out or ()), a.leave_out_series
    made: list[Path] = []

    def union(folders: list[Path], **kw) -> Path:
        made.append(Path(tempfile.mkdtemp(prefix="coral-train-data-")))
        return union_folder(folders, made[-1], **kw)

    taught = [*a.data, *(a.refuse or [])]
    every = [*a.data, *([a.val_data] if a.val_data else [])]
    kw = {"exclude": left}
    if series:
        kw["keep"] = lambda f: series_of(f.name) != series
    try:
        yield Folders(
            data=union(taught, **kw) if left or series or len(taught) > 1 else a.data[0],
            val_data=union([a.val_data], **kw) if (left or series) and a.val_data
            else a.val_data,
            untaught=union(every, only=left) if left else None,
            held_out=union(every, exclude=left, keep=lambda f: series_of(f.name) == series)
            if series else None)
    finally:
        for d in made:
            shutil.rmtree(d, ignore_errors=True)


def measure_untaught(out: Path, folders: Folders) -> dict | None:
    """--leave-out: the finished bundle meets the left-out classes' photos (all must be
    refused) beside its validation photos; the figures go into untaught.json, report.md
    and the manifest (open_set.untaught), resealed by report_sources."""
    if folders.untaught is None:
        return None
    from host_training.openset import untaught
    from host_training.train.evaluate import evaluate_model

    fig = evaluate_model(out, folders.val_data, untaught=folders.untaught)["untaught"]
    (out / "untaught.json").write_text(json.dumps(fig, indent=2) + "\n")
    _add_to_bundle(out, untaught.section(fig), "untaught", fig)
    print(untaught.summary(fig))
    return fig


def measure_held_out(out: Path, folders: Folders, series: str | None) -> dict | None:
    """--leave-out-series: the finished bundle meets the held-out series' photos of the
    classes it knows (another camera and setting): top-1, accepted right, accepted as a
    wrong value and what each class is taken for, into held_out.json, report.md and the
    manifest (open_set.held_out_series), resealed by report_sources."""
    if folders.held_out is None:
        return None
    from device.bundle import load_bundle
    from host_training.openset import unseen_series
    from host_training.train.dataset import folder_classes, union_folder
    from host_training.train.evaluate import evaluate_model

    labels = load_bundle(out).labels
    classes = folder_classes(folders.held_out)
    unknown = sorted(set(classes) - set(labels))
    if unknown:
        log.warning("series %s: class(es) %s have no photos outside it, so the bundle does "
                    "not know them; measured on the others only", series, unknown)
    known = union_folder([folders.held_out], folders.held_out.parent
                         / (folders.held_out.name + "-known"), only=set(labels))
    try:
        res = evaluate_model(out, known)
    finally:
        shutil.rmtree(known, ignore_errors=True)
    fig = unseen_series.figures(res, series or "", unknown)
    (out / "held_out.json").write_text(json.dumps(fig, indent=2) + "\n")
    _add_to_bundle(out, unseen_series.section(fig), "held_out_series", fig)
    print(unseen_series.summary(fig))
    return fig


def _add_to_bundle(out: Path, report_lines: list[str], key: str, fig: dict) -> None:
    """Append to report.md and put the figures in the manifest's open_set (report_sources
    reseals the bundle afterwards)."""
    report = out / "report.md"
    report.write_text(report.read_text() + "\n".join(report_lines) + "\n")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["open_set"][key] = fig
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def settings_from_args(a: argparse.Namespace, folders: Folders, refused: list[str]):
    """The validated settings object; options left unset keep its defaults."""
    from host_training.train.settings import make_settings

    augment = {k: getattr(a, k) for k in AUGMENTATIONS if getattr(a, k) is not None}
    return make_settings(
        augment=augment or None,
        data=folders.data, out=a.out, val_data=folders.val_data, val_split=a.val_split,
        input_size=a.input_size, alpha=a.alpha, weights=a.weights, epochs=a.epochs,
        fine_tune_epochs=a.fine_tune_epochs,
        fine_tune_from=(int(a.fine_tune_from) if a.fine_tune_from and
                        a.fine_tune_from.lstrip("-").isdigit() else a.fine_tune_from),
        batch_size=a.batch_size, seed=a.seed, name=a.name, version=a.version,
        feature_copies=a.feature_copies, max_int8_drop=a.max_int8_drop,
        representative_count=a.representative_count, golden_per_class=a.golden_per_class,
        learning_rate=a.learning_rate, fine_tune_learning_rate=a.fine_tune_learning_rate,
        patience=a.patience, negatives=a.negatives, boxes=a.boxes, roi=a.roi,
        max_false_accept=a.max_false_accept, ood=a.ood, ood_keep=a.ood_keep,
        score_keep=a.score_keep,
        epoch_samples=a.epoch_samples, negative_eval=a.negative_eval,
        loso=False if a.no_loso else None, other=a.other, other_exposure=a.other_exposure or None,
        refused_labels=tuple(refused) or None)


def report_sources(sources: dict[str, dict[str, int]], out: Path) -> None:
    """Which device gave how many training images: printed, and in the bundle's report."""
    lines = ["", "## Training images by source", "",
             "Images per --data folder and device (frames saved on a device are named "
             "`<device>__…`), before the validation split.", "",
             "| data folder | device | images |", "|---|---|---|"]
    for folder, counts in sources.items():
        lines += [f"| {folder} | {dev} | {n} |" for dev, n in counts.items()]
        for dev, n in counts.items():
            print(f"training images: {n:6d} from {dev} ({folder})")
    (out / "data_sources.json").write_text(json.dumps(sources, indent=2) + "\n")
    report = out / "report.md"
    if report.exists():
        report.write_text(report.read_text() + "\n".join(lines) + "\n")
    if (out / "manifest.json").is_file():
        # the bundle was already sealed: record the new and changed files' sha256s, or the
        # device would refuse it (report.md no longer matching its hash)
        from device.bundle import MANIFEST, write_manifest

        manifest = json.loads((out / MANIFEST).read_text())
        for key in ("files", "format", "created"):
            manifest.pop(key, None)
        write_manifest(out, manifest)


def print_summary(manifest: dict, out: Path) -> None:
    """Accuracy float vs int8, the operating point, far and near out-of-distribution figures;
    a warning when the bundle has no reject path."""
    from host_training.train.report import summary_table

    m = manifest["metrics"]
    print(summary_table(m["float"], m["int8"]))
    print(f"\nfloat {m['float']['accuracy']:.4f} | int8 {m['int8']['accuracy']:.4f} | "
          f"agreement {m['agreement']:.4f} | Edge TPU (predicted): "
          f"{manifest['edgetpu_check']['verdict']} | bundle {out}")
    o = manifest["open_set"]
    ours = o["validation"]["ours"]
    neg = o["validation_negatives"].get("ours", {})
    print(f"operating point: accepted right {ours['accepted_right']:.4f} | accepted as a "
          f"wrong value {ours['accepted_wrong']:.4f}")
    from host_training.openset import nearood, other_notes

    print(f"far (no note): validation negatives accepted {neg.get('false_accept')} | "
          f"negative set accepted {o['negative_set'].get('ours', {}).get('false_accept')}")
    print(nearood.summary(o.get("lodo")))
    if o.get("other_notes"):
        print(other_notes.summary(o["other_notes"]))
    if not manifest["decision"]["background_labels"]:
        log.warning("this bundle has no reject path for things that are not one of its "
                    "classes: train with --negatives DIR (and --boxes FILE) to give it one")


def compile_if_possible(out: Path) -> None:
    """Compile the bundle for the Edge TPU, or say how to install the compiler."""
    from host_training.edgetpu.compiler import compile_model, find_compiler

    if find_compiler():
        compile_model(out)
    else:
        from host_training.edgetpu.compiler import INSTALL_HELP

        log.warning("not compiled for the Edge TPU: %s", INSTALL_HELP)
