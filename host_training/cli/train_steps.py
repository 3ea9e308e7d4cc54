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


@contextmanager
def training_folders(a: argparse.Namespace) -> Iterator[Folders]:
    """The given folders, or temporary unions of links to them (several --data, a class
    left out), removed afterwards."""
    from host_training.train.dataset import union_folder

    left = set(a.leave_out or ())
    made: list[Path] = []

    def union(folders: list[Path], **kw) -> Path:
        made.append(Path(tempfile.mkdtemp(prefix="coral-train-data-")))
        return union_folder(folders, made[-1], **kw)

    taught = [*a.data, *(a.refuse or [])]
    try:
        yield Folders(
            data=union(taught, exclude=left) if left or len(taught) > 1 else a.data[0],
            val_data=union([a.val_data], exclude=left) if left and a.val_data else a.val_data,
            untaught=union([*a.data, *([a.val_data] if a.val_data else [])], only=left)
            if left else None)
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
    report = out / "report.md"
    report.write_text(report.read_text() + "\n".join(untaught.section(fig)) + "\n")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["open_set"]["untaught"] = fig
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(untaught.summary(fig))
    return fig


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
