"""The trainer: a real train -> quantize -> bundle -> device classify run on generated data,
clear errors for bad datasets, and ImageNet weights through KERAS_HOME."""

import json

import cv2
import numpy as np
import pytest

from device.bundle import load_bundle
from device.inference import create_classifier
from device.tools.synthetic import CLASSES, write_dataset
from host_training.train.dataset import DatasetError, load_dataset, stratified_split

from .conftest import SHARED, run_cli

KERAS_WEIGHTS = SHARED / "weights" / "keras"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Train once on tiny generated data (from scratch, 64 px), shared by the tests below."""
    root = tmp_path_factory.mktemp("train")
    data = write_dataset(root / "data", per_class=60, seed=3)
    held = write_dataset(root / "held", per_class=12, seed=99)
    out = root / "compiled_models" / "tiny"
    r = run_cli("train", "--data", str(data), "--out", str(out), "--input-size", "64",
                "--alpha", "0.35", "--weights", "none", "--fine-tune-epochs", "30",
                "--patience", "20", "--batch-size", "16", "--representative-count", "100",
                "--version", "0.0.1", "--max-int8-drop", "15", module="host_training", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"out": out, "held": held, "stdout": r.stdout, "stderr": r.stderr}


def test_bundle_is_complete_and_verified(tiny):
    out = tiny["out"]
    for name in ("model_quant.tflite", "labels.txt", "manifest.json", "report.md",
                 "training_curves.png", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    bundle = load_bundle(out)  # checks every sha256
    assert bundle.labels == tuple(sorted(CLASSES))
    m = bundle.manifest
    assert m["input"] == {"width": 64, "height": 64, "channels": 3, "resize": "stretch",
                          "colour_order": "RGB", "dtype": "uint8"}
    assert set(m["metrics"]) == {"float", "int8", "agreement"}
    assert m["dataset"]["train"] and m["training"]["settings"]["weights"] == "none"
    assert m["edgetpu_check"]["cpu_ops"] == 0, m["edgetpu_check"]  # the compiler will map all
    assert "| note_5 |" in tiny["stdout"] and "agreement" in tiny["stdout"]
    # a plain class-folder dataset: a working bundle, its operating point, and a warning
    assert m["outputs"] == ["scores", "similarity"] and m["decision"]["background_labels"] == []
    assert "no reject path" in tiny["stderr"]


def test_int8_model_is_uint8_batch1_and_agrees_with_keras(tiny):
    m = load_bundle(tiny["out"]).manifest["metrics"]
    assert m["agreement"] >= 0.85, m
    assert abs(m["float"]["accuracy"] - m["int8"]["accuracy"]) <= 0.1
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tiny["out"] / "model_quant.tflite"))
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and outp["dtype"] == np.uint8
    assert list(inp["shape"]) == [1, 64, 64, 3] and list(inp["shape_signature"]) == [1, 64, 64, 3]


def test_device_classifies_held_back_images_well_above_chance(tiny):
    clf = create_classifier(load_bundle(tiny["out"]), "cpu", top_k=1)
    correct = total = 0
    for d in sorted(tiny["held"].iterdir()):
        for f in sorted(d.iterdir()):
            rgb = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)  # 160x120: resized
            correct += clf.classify(rgb).best.label == d.name
            total += 1
    assert total == 48
    assert correct / total >= 0.6, f"{correct}/{total} (chance is 0.25)"


def test_golden_samples_give_their_label(tiny):
    bundle = load_bundle(tiny["out"])
    golden = bundle.manifest["golden"]
    assert golden, "no golden samples written"
    clf = create_classifier(bundle, "cpu", top_k=1)
    for g in golden:
        rgb = cv2.cvtColor(cv2.imread(str(tiny["out"] / g["file"])), cv2.COLOR_BGR2RGB)
        assert clf.classify(rgb).best.label == g["label"]


def test_evaluate_cli_json(tiny):
    r = run_cli("evaluate", "--model", str(tiny["out"]), "--data", str(tiny["held"]), "--json",
                module="host_training")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["n"] == 48 and result["accuracy"] >= 0.6
    assert set(result["per_class"]) == set(CLASSES)
    assert sum(map(sum, result["confusion_matrix"])) == 48


# -- bad datasets ---------------------------------------------------------------------------

def test_not_a_folder(tmp_path):
    r = run_cli("train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"),
                "--weights", "none", module="host_training")
    assert r.returncode == 2 and "is not a folder" in r.stderr and "Traceback" not in r.stderr


def test_empty_class_single_class_no_images(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "note_5").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        load_dataset(tmp_path, 32)
    write_dataset(tmp_path, per_class=2, classes=("empty",))
    with pytest.raises(DatasetError, match=r"\['note_5'\] hold no images"):
        load_dataset(tmp_path, 32)
    single = tmp_path / "single"
    write_dataset(single, per_class=2, classes=("empty",))
    with pytest.raises(DatasetError, match="single class"):
        load_dataset(single, 32)
    with pytest.raises(DatasetError, match="no class subfolders"):
        load_dataset(tmp_path / "empty", 32)


def test_corrupt_image_is_skipped_and_named(tmp_path, caplog):
    write_dataset(tmp_path, per_class=3, classes=("empty", "note_5"))
    (tmp_path / "note_5" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    ds = load_dataset(tmp_path, 32)
    assert len(ds.labels) == 6 and ds.skipped == (str(tmp_path / "note_5" / "broken.jpg"),)
    assert "broken.jpg" in caplog.text
    assert ds.images.shape == (6, 32, 32, 3)


def test_stratified_split_keeps_every_class():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2)
    tr, va = stratified_split(labels, 0.2, seed=1)
    assert sorted(np.bincount(labels[va])) == [1, 1, 2]
    assert len(set(tr) & set(va)) == 0 and len(tr) + len(va) == len(labels)
    again = stratified_split(labels, 0.2, seed=1)
    assert np.array_equal(va, again[1])


def test_bad_settings_named(tmp_path):
    r = run_cli("train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--alpha", "0.6",
                module="host_training")
    assert r.returncode == 2 and "--alpha" in r.stderr


# -- ImageNet weights through KERAS_HOME -----------------------------------------------------

def test_imagenet_weights_load_through_keras_home(tmp_path):
    if not (KERAS_WEIGHTS / "models").is_dir():
        pytest.skip(f"needs ImageNet weights in {KERAS_WEIGHTS}")
    data = write_dataset(tmp_path / "data", per_class=16, seed=5)
    out = tmp_path / "imagenet"
    r = run_cli("train", "--data", str(data), "--out", str(out), "--input-size", "96",
                "--weights", "imagenet", "--epochs", "15", "--fine-tune-epochs", "0",
                "--feature-copies", "0", "--representative-count", "100",
                module="host_training", timeout=600, env={"KERAS_HOME": str(KERAS_WEIGHTS)})
    assert r.returncode == 0, r.stderr[-3000:]
    m = load_bundle(out).manifest
    assert m["training"]["settings"]["weights"] == "imagenet"
    # a frozen random base cannot separate the notes with a linear head; ImageNet's can
    assert m["metrics"]["float"]["accuracy"] >= 0.9, m["metrics"]["float"]


def test_augmentation_is_configurable_from_the_cli(tmp_path):
    r = run_cli("train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--zoom", "1.5",
                module="host_training")
    assert r.returncode == 2 and "--zoom" in r.stderr  # validated like every setting
    from host_training.train.settings import make_settings

    s = make_settings(data=tmp_path, out=tmp_path / "o", augment={"flip": True, "rot90": False})
    assert s.augment.flip and not s.augment.rot90 and s.augment.zoom == 0.3
