"""`coral-train train`: image folder -> MobileNetV2 -> int8 TFLite bundle, then its summary."""

from __future__ import annotations

import argparse
from pathlib import Path

SERIES = ("webcam", "table", "hand", "other")  # train.samples.series_of's names


def _roi(text: str) -> tuple[float, float, float, float]:
    """--roi x,y,w,h: four fractions of the image."""
    try:
        x, y, w, h = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give x,y,width,height as fractions, e.g. "
                                         "0.3,0.2,0.4,0.5") from None
    if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 and 0 < h <= 1
            and x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9):
        raise argparse.ArgumentTypeError(f"{text!r}: the region must lie inside the image "
                                         "(fractions, x + width and y + height at most 1)")
    return x, y, w, h


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `train` and its options on the subcommand table (the order is --help's)."""
    t = sub.add_parser("train", help="image folder -> MobileNetV2 -> int8 TFLite bundle")
    _add_model_options(t)
    _add_augmentation_options(t)
    _add_open_world_options(t)
    t.add_argument("--epoch_samples", "--epoch-samples", dest="epoch_samples", type=int,
                   help="samples per fine-tuning epoch (default: the whole training pool)")
    t.add_argument("--no_compile", "--no-compile", dest="no_compile", action="store_true",
                   help="do not run edgetpu_compiler at the end")
    t.set_defaults(func=run)


def _add_model_options(t: argparse.ArgumentParser) -> None:
    """Data, bundle, model size and the training schedule."""
    t.add_argument("--data", required=True, type=Path, action="append",
                   help="folder with one subfolder per class; repeat it to train on several "
                   "(e.g. data/ from `make collect` and the original set)")
    t.add_argument("--val_data", "--val-data", dest="val_data", type=Path,
                   help="validation folder (default: a stratified split of --data)")
    t.add_argument("--val_split", "--val-split", dest="val_split", type=float,
                   help="validation fraction without --val-data (default 0.2)")
    t.add_argument("--out", required=True, type=Path,
                   help="bundle folder, e.g. compiled_models/NAME")
    t.add_argument("--input_size", "--input-size", dest="input_size", type=int,
                   help="square input size in pixels (default 224)")
    t.add_argument("--alpha", type=float, help="MobileNetV2 width (default 1.0)")
    t.add_argument("--epochs", type=int, help="head epochs on cached features (default 30)")
    t.add_argument("--fine_tune_epochs", "--fine-tune-epochs", dest="fine_tune_epochs", type=int,
                   help="fine-tuning epochs (default 20; 0 = none)")
    t.add_argument("--fine_tune_from", "--fine-tune-from", dest="fine_tune_from",
                   help="first base layer to fine-tune, index or name (default 100; 0 "
                        "without pretrained weights)")
    t.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int,
                   help="images per training batch (default 32)")
    t.add_argument("--learning_rate", "--learning-rate", dest="learning_rate", type=float,
                   help="head learning rate (default 0.001)")
    t.add_argument("--fine_tune_learning_rate", "--fine-tune-learning-rate",
                   dest="fine_tune_learning_rate", type=float,
                   help="fine-tuning learning rate (default 0.0001 with pretrained weights, "
                        "0.001 without)")
    t.add_argument("--weights", help="imagenet (default), none, or a weights file. Offline: "
                                     "set KERAS_HOME to a folder holding Keras's weights file")
    t.add_argument("--feature_copies", "--feature-copies", dest="feature_copies", type=int,
                   help="augmented copies per image in the cached features (default 4)")
    t.add_argument("--representative_count", "--representative-count",
                   dest="representative_count", type=int,
                   help="calibration images for int8 (default 200)")
    t.add_argument("--max_int8_drop", "--max-int8-drop", dest="max_int8_drop", type=float,
                   help="fail when int8 loses more accuracy points than this (default 2)")
    t.add_argument("--golden_per_class", "--golden-per-class", dest="golden_per_class", type=int,
                   help="self-test images per class kept in the bundle (default 1)")
    t.add_argument("--name", help="model name (default: the --out folder name)")
    t.add_argument("--version", help="model version (default: a timestamp)")
    t.add_argument("--patience", type=int,
                   help="early-stopping patience in epochs, on validation loss (default 5)")
    t.add_argument("--seed", type=int, help="random seed (default 42)")


def _add_augmentation_options(t: argparse.ArgumentParser) -> None:
    """How training images are varied; the defaults (in brackets) live in the settings."""
    g = t.add_argument_group("augmentation (defaults suit a note in a slot or in a hand)")
    g.add_argument("--rotation", type=float, help="max rotation, fraction of a turn (0.08)")
    g.add_argument("--rot90", action=argparse.BooleanOptionalAction, default=None,
                   help="random quarter turns (on)")
    g.add_argument("--zoom", type=float, help="max zoom in/out, fraction (0.3)")
    g.add_argument("--translate", type=float, help="max shift, fraction of the size (0.15)")
    g.add_argument("--brightness", type=float, help="max brightness change (0.25)")
    g.add_argument("--contrast", type=float, help="max contrast change (0.3)")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (off: a mirrored note never occurs)")
    g.add_argument("--perspective", type=float, help="max perspective corner shift (0.08)")
    g.add_argument("--white_balance", "--white-balance", dest="white_balance", type=float,
                   help="max per-channel gain change (0.15)")
    g.add_argument("--glare", type=float, help="probability of a glare spot (0.2)")
    g.add_argument("--blur", type=float, help="probability of focus/motion blur (0.3)")
    g.add_argument("--noise", type=float, help="max sensor noise std (6)")
    g.add_argument("--jpeg", type=float, help="probability of JPEG re-compression (0.4)")
    g.add_argument("--paste", type=float,
                   help="probability a note crop is pasted onto another background (0.5)")


def _add_open_world_options(t: argparse.ArgumentParser) -> None:
    """What the bundle refuses: negatives, refused notes, thresholds and their evaluation."""
    o = t.add_argument_group("open world: what the bundle refuses")
    o.add_argument("--negatives", type=Path,
                   help="folder of images that are none of the classes (empty slot, hands, "
                        "other currencies, anything): trained as a 'background' class")
    o.add_argument("--roi", type=_roi, metavar="X,Y,W,H",
                   help="crop every image to this region first (fractions of the image), as "
                        "the device crops a [[camera.roi]] with the same numbers")
    o.add_argument("--boxes", type=Path,
                   help="CSV of the note's box per image (file,x_center,y_center,width,height, "
                        "YOLO-normalised): trains on the note cropped to its box too, and "
                        "mines negatives from the frames with the note cut out")
    o.add_argument("--max_false_accept", "--max-false-accept", dest="max_false_accept",
                   type=float, help="per-class false-accept rate on validation the class "
                                    "thresholds are chosen for (default 0.005)")
    o.add_argument("--ood", choices=["class_mean_cosine", "max_softmax", "none"],
                   help="out-of-distribution score (default class_mean_cosine: a second "
                        "model output, on the Edge TPU)")
    o.add_argument("--ood_keep", "--ood-keep", dest="ood_keep", type=float,
                   help="share of correctly classified validation notes the OOD threshold "
                        "keeps (default 0.99)")
    o.add_argument("--score_keep", "--score-keep", dest="score_keep", type=float,
                   help="share of correctly classified validation notes whose top-1 score "
                        "reaches the class thresholds; below 1 the score rule refuses notes "
                        "the OOD score lets through (default 0.95; 1 = off)")
    o.add_argument("--negative_eval", "--negative-eval", dest="negative_eval", type=Path,
                   help="negative set for the report only (never trained or calibrated on); "
                        "subfolders are reported as groups")
    o.add_argument("--refuse", type=Path, action="append", metavar="DIR",
                   help="folder with one subfolder per note the bundle learns in order to "
                        "refuse it (e.g. low values collected with `make collect`): trained "
                        "as classes, listed in the manifest's decision.refused_labels, never "
                        "accepted; repeatable")
    o.add_argument("--other", type=Path,
                   help="folder of real notes that are not ours (irr/, eur/, vnd-phone/, as "
                        "../shared/datasets/banknotes-other): the bundle is evaluated on its "
                        "evaluation part and vnd-phone/ for the report (never trained on)")
    o.add_argument("--other_exposure", "--other-exposure", dest="other_exposure",
                   action="store_true",
                   help="also train on the train part of --other's irr/ and eur/ as background "
                        "(outlier exposure), pasted onto scenes like our notes' crops; the "
                        "evaluation part and vnd-phone/ are never trained on")
    o.add_argument("--leave_out", "--leave-out", dest="leave_out", action="append",
                   metavar="CLASS",
                   help="train the whole recipe without this class of --data (and "
                        "--val-data), then measure how often the bundle accepts its photos: "
                        "leave-one-denomination-out on the real network, not the frozen-"
                        "feature proxy; the figures go into report.md and untaught.json. "
                        "Repeat for several classes")
    o.add_argument("--leave_out_series", "--leave-out-series", dest="leave_out_series",
                   choices=SERIES, metavar="SERIES",
                   help="train the whole recipe without one photo series of --data and "
                        "--val-data (named by file name: " + ", ".join(SERIES) + "), then "
                        "measure its photos: accepted right, accepted as a wrong value and "
                        "what for; into report.md and held_out.json")
    o.add_argument("--no_loso", "--no-loso", dest="no_loso", action="store_true",
                   help="skip the leave-one-series-out figures")


def run(a: argparse.Namespace) -> int:
    """Check the folders, train, report the figures, then compile when the compiler is here."""
    from host_training.cli.train_steps import (
        check_folders,
        compile_if_possible,
        measure_held_out,
        measure_untaught,
        print_summary,
        report_sources,
        settings_from_args,
        training_folders,
    )
    from host_training.train.pipeline import run_training

    sources, refused = check_folders(a)  # a bad folder fails here, before anything is built
    with training_folders(a) as folders:
        s = settings_from_args(a, folders, refused)
        manifest = run_training(s)
        measure_untaught(s.out, folders)
        measure_held_out(s.out, folders, a.leave_out_series)
    report_sources(sources, s.out)
    print_summary(manifest, s.out)
    if not a.no_compile:
        compile_if_possible(s.out)
    return 0
