"""`coral-train`: train a bundle from an image folder, evaluate it, make demo data."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from device.errors import ModelError, run_command

log = logging.getLogger("host_training")


def quiet_tensorflow() -> None:
    """Keep TensorFlow's own chatter (C++ INFO/WARNING lines such as node_def_util and
    oneDNN notices, absl and deprecation warnings) off the user's terminal: set before
    TensorFlow's first import, which reads them once. TF_CPP_MIN_LOG_LEVEL=0 brings it back."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        return
    for module in ("tensorflow", "keras", "tf_keras", "absl", "h5py", "google.protobuf"):
        warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")
        logging.getLogger(module.split(".")[0]).setLevel(logging.ERROR)
    try:
        import absl.logging  # TensorFlow's; installed with it

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass


quiet_tensorflow()  # before any command imports TensorFlow


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


def cmd_train(a: argparse.Namespace) -> int:
    from host_training.train.pipeline import run_training
    from host_training.train.report import summary_table
    from host_training.train.settings import make_settings

    augment = {k: v for k, v in {
        "rotation": a.rotation, "rot90": a.rot90, "zoom": a.zoom, "translate": a.translate,
        "brightness": a.brightness, "contrast": a.contrast, "flip": a.flip,
        "perspective": a.perspective, "white_balance": a.white_balance, "glare": a.glare,
        "blur": a.blur, "noise": a.noise, "jpeg": a.jpeg, "paste": a.paste}.items()
        if v is not None}
    from host_training.train.dataset import DatasetError, data_sources, folder_classes

    folders = [*a.data, *(a.refuse or [])]
    sources = data_sources(folders)  # a bad folder fails here, before anything is built
    refused = sorted({c for d in a.refuse or [] for c in folder_classes(d)})
    taught = {c for d in a.data for c in folder_classes(d)}
    if set(refused) & taught:
        raise DatasetError(f"class(es) {sorted(set(refused) & taught)} are in --data and in "
                           "--refuse: a class is either accepted or refused; remove it from one")
    union = None
    if len(folders) > 1:
        import tempfile

        from host_training.train.dataset import union_folder

        union = union_folder(folders, Path(tempfile.mkdtemp(prefix="coral-train-data-")))
    s = make_settings(
        augment=augment or None,
        data=union or a.data[0], out=a.out, val_data=a.val_data, val_split=a.val_split,
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
    try:
        manifest = run_training(s)
    finally:
        if union is not None:
            import shutil

            shutil.rmtree(union, ignore_errors=True)
    _report_sources(sources, s.out)
    m = manifest["metrics"]
    print(summary_table(m["float"], m["int8"]))
    print(f"\nfloat {m['float']['accuracy']:.4f} | int8 {m['int8']['accuracy']:.4f} | "
          f"agreement {m['agreement']:.4f} | Edge TPU (predicted): "
          f"{manifest['edgetpu_check']['verdict']} | bundle {s.out}")
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
    if not a.no_compile:
        from host_training.edgetpu.compiler import compile_model, find_compiler

        if find_compiler():
            compile_model(s.out)
        else:
            from host_training.edgetpu.compiler import INSTALL_HELP

            log.warning("not compiled for the Edge TPU: %s", INSTALL_HELP)
    return 0


def cmd_inspect(a: argparse.Namespace) -> int:
    from host_training.train.tflite_model import inspect_model, load_tflite

    path = Path(a.model)
    if path.is_dir():  # a bundle: its Edge TPU model when compiled, else the CPU one
        found = [path / n for n in ("model_quant_edgetpu.tflite", "model_quant.tflite")
                 if (path / n).is_file()]
        if not found:
            raise ModelError(f"{path}: no model_quant_edgetpu.tflite or model_quant.tflite "
                             "in this folder (is it a bundle?)")
        path = found[0]
    elif not path.exists():
        raise ModelError(f"{path}: no such file")
    info = inspect_model(load_tflite(path))
    if a.json:
        print(json.dumps(info))
        return 0
    print(f"{info['path']}  compiled for the Edge TPU: {info['compiled_for_edgetpu']}")
    for k, v in info["metadata"].items():
        print(f"  metadata {k}: {v}")
    for i, sg in enumerate(info["subgraphs"]):
        print(f"subgraph {i} {sg['name']!r}: {sg['op_count']} ops")
        for op in sg["ops"]:
            print(f"  {op['op']:<30} v{op['version']:<3} x{op['count']}")
        for kind in ("inputs", "outputs"):
            for t in sg[kind]:
                q = t["quantization"]
                print(f"  {kind[:-1]:<6} {t['name']}: {t['dtype']} {t['shape']} "
                      f"(signature {t['shape_signature']}) scale {q['scale'][:1]} "
                      f"zero_point {q['zero_point'][:1]}")
        if sg["cpu_ops"]:
            print("  outside the edgetpu-custom-op (run on the CPU): "
                  + ", ".join(o["op"] for o in sg["cpu_ops"]))
    return 0


def cmd_check_edgetpu(a: argparse.Namespace) -> int:
    from host_training.edgetpu.edgetpu_check import analyse, format_report
    from host_training.train.tflite_model import load_tflite

    result = analyse(load_tflite(a.model), multiple_subgraphs=a.multiple_subgraphs)
    print(json.dumps(result) if a.json else format_report(result))
    if result["model_issues"]:
        return 1
    return 0 if result["cpu_ops"] == 0 or a.allow_cpu_ops else 1


def cmd_compile(a: argparse.Namespace) -> int:
    from host_training.edgetpu.compiler import compile_model

    result = compile_model(Path(a.model), timeout=a.timeout)
    return 0 if result["compiled"] else 1


def cmd_evaluate(a: argparse.Namespace) -> int:
    from host_training.train.evaluate import evaluate_model

    result = evaluate_model(Path(a.model), Path(a.data) if a.data else None,
                            Path(a.labels) if a.labels else None,
                            Path(a.negatives) if a.negatives else None,
                            Path(a.other) if a.other else None)
    if a.json:
        print(json.dumps(result))
        return 0
    if not result["has_decision"]:
        log.warning("%s has no decision section: no reject path; judged as top-1 >= 0.7 and "
                    "not background", a.model)
    d = result["decision"]
    if "negatives" in result:
        print(f"far: negatives {result['negatives']['false_accept']:.4f} accepted as a note "
              f"(n={result['negatives']['n_negatives']})")
    from host_training.openset import nearood, other_notes

    if result.get("other_notes"):
        print(other_notes.summary(result["other_notes"]))
    print(nearood.summary(result.get("lodo")) + ("" if result.get("lodo") else
                                                 " (the bundle's manifest has no figures)"))
    if result.get("n"):
        print(f"accuracy {result['accuracy']:.4f} on {result['n']} images | accepted right "
              f"{d['accepted_right']:.4f}, as a wrong value {d['accepted_wrong']:.4f}, "
              f"rejected {d['rejected_notes']:.4f}")
        for c, r in result["per_class"].items():
            print(f"  {c:20s} precision {r['precision']:.3f} recall {r['recall']:.3f} "
                  f"(n={r['support']})")
        print("confusion matrix (rows true, columns predicted):")
        for c, row in zip(result["labels"], result["confusion_matrix"], strict=True):
            print(f"  {c:20s} {row}")
    return 0


def cmd_negative_set(a: argparse.Namespace) -> int:
    from host_training.train.negset import build_from_folders, build_negative_set

    if a.sources:
        counts = build_from_folders(Path(a.out), [Path(f) for f in a.sources], a.views, a.seed)
    else:
        counts = build_negative_set(Path(a.out), views=a.views, seed=a.seed)
    print(f"negative set written to {a.out}: " + ", ".join(f"{k} {v}" for k, v in
                                                          counts.items()))
    return 0


def cmd_demo_data(a: argparse.Namespace) -> int:
    from device.tools.synthetic import write_dataset

    write_dataset(Path(a.out), a.per_class, a.seed)
    print(f"synthetic dataset written to {a.out}")
    return 0


def _report_sources(sources: dict[str, dict[str, int]], out: Path) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coral-train", description=(
        "Train an Edge TPU image classifier from a folder of images (one subfolder per "
        "class) and write a model bundle the device daemon loads."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("train", help="image folder -> MobileNetV2 -> int8 TFLite bundle")
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
    o.add_argument("--no_loso", "--no-loso", dest="no_loso", action="store_true",
                   help="skip the leave-one-series-out figures")
    t.add_argument("--epoch_samples", "--epoch-samples", dest="epoch_samples", type=int,
                   help="samples per fine-tuning epoch (default: the whole training pool)")
    t.add_argument("--no_compile", "--no-compile", dest="no_compile", action="store_true",
                   help="do not run edgetpu_compiler at the end")
    t.set_defaults(func=cmd_train)

    i = sub.add_parser("inspect", help="ops, versions, tensors and metadata of a .tflite "
                                       "or a bundle's model")
    i.add_argument("model", help=".tflite file, or a bundle folder (its Edge TPU model when "
                                "compiled, else model_quant.tflite)")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=cmd_inspect)

    c = sub.add_parser("check-edgetpu", help="predict, offline, which ops run on the Edge TPU")
    c.add_argument("model", help="uncompiled .tflite file")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.add_argument("--allow_cpu_ops", "--allow-cpu-ops", dest="allow_cpu_ops",
                   action="store_true", help="exit 0 even when some ops would run on the CPU")
    c.add_argument("--multiple_subgraphs", "--multiple-subgraphs", dest="multiple_subgraphs",
                   action="store_true", help="assume the compiler may split the model")
    c.set_defaults(func=cmd_check_edgetpu)

    k = sub.add_parser("compile", help="run edgetpu_compiler on a bundle or .tflite")
    k.add_argument("model", help="bundle folder or .tflite file")
    k.add_argument("--timeout", type=int, default=600, help="seconds (default 600)")
    k.set_defaults(func=cmd_compile)

    e = sub.add_parser("evaluate", help="accuracy of a bundle or .tflite on a class-folder dataset")
    e.add_argument("--model", required=True, help="bundle folder or .tflite")
    e.add_argument("--labels", help="labels file for a bare .tflite")
    e.add_argument("--data", help="folder with one subfolder per class")
    e.add_argument("--negatives", help="folder of images that are none of the classes: "
                                       "reports how many the bundle accepts")
    e.add_argument("--other", help="folder of real notes that are not ours (irr/, eur/, "
                                   "vnd-phone/): accepted share of its evaluation part, "
                                   "untaught vnd-phone notes refused, known ones right/wrong")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_evaluate)

    n = sub.add_parser("negative-set", help="assemble the negative evaluation set (photos "
                                            "from scikit-image, scikit-learn and Coral, "
                                            "synthetic foreign notes) with its sources")
    n.add_argument("out", help="output folder")
    n.add_argument("--views", type=int, default=4, help="views per photo (default 4)")
    n.add_argument("--from", dest="sources", nargs="+", metavar="DIR",
                   help="instead: whole images and crops of every photo in these folders "
                        "(e.g. wallpapers, for --negatives)")
    n.add_argument("--seed", type=int, default=0, help="random seed for the views (default 0)")
    n.set_defaults(func=cmd_negative_set)

    d = sub.add_parser("demo-data", help="write the synthetic 'notes in a slot' dataset")
    d.add_argument("out", help="output folder")
    d.add_argument("--per_class", "--per-class", dest="per_class", type=int, default=60,
                   help="images per class (default 60)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.set_defaults(func=cmd_demo_data)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_command(args.func, args, log)


if __name__ == "__main__":
    sys.exit(main())
