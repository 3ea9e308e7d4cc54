"""The bundle contract: labels formats, sha256 checks, clear errors for bad model files."""

import json

import pytest

from device.bundle import load_bundle, parse_labels, write_manifest
from device.errors import ModelError
from device.inference import create_classifier

from .conftest import CORAL_MODELS, need_shared


def test_labels_three_formats():
    assert parse_labels("background\ntench\n\n") == ("background", "tench")
    assert parse_labels("0 cat\n1 dog\n3 bird\n") == ("cat", "dog", "2", "bird")
    assert parse_labels("0:cat\n1: big dog\n") == ("cat", "big dog")
    # a plain label starting with a number is not taken for an id when others are not
    assert parse_labels("2 of hearts\nqueen\n") == ("2 of hearts", "queen")


def test_labels_repeated_id_is_an_error():
    with pytest.raises(ModelError, match="repeats an id"):
        parse_labels("0 a\n0 b\n")


def make_bundle(tmp_path, model_bytes=b"not a model"):
    root = tmp_path / "b"
    root.mkdir()
    (root / "model_quant.tflite").write_bytes(model_bytes)
    (root / "labels.txt").write_text("a\nb\n")
    write_manifest(root, {"name": "t", "version": "1", "labels": ["a", "b"],
                          "input": {"width": 8, "height": 8}})
    return root


def test_bundle_roundtrip(tmp_path):
    b = load_bundle(make_bundle(tmp_path))
    assert (b.name, b.version, b.labels) == ("t", "1", ("a", "b"))
    assert b.input.width == 8 and b.input.resize == "stretch"
    assert len(b.sha256) == 64 and b.tpu_model is None


def test_bundle_wrong_sha256_names_the_file(tmp_path):
    root = make_bundle(tmp_path)
    (root / "labels.txt").write_text("a\nc\n")
    with pytest.raises(ModelError, match=r"labels\.txt does not match its sha256"):
        load_bundle(root)


def test_bundle_missing_listed_file(tmp_path):
    root = make_bundle(tmp_path)
    (root / "model_quant.tflite").unlink()
    with pytest.raises(ModelError, match=r"model_quant\.tflite is listed .* but missing"):
        load_bundle(root)


def test_bundle_entry_escaping_root_is_refused(tmp_path):
    root = make_bundle(tmp_path)
    m = json.loads((root / "manifest.json").read_text())
    m["files"]["../x"] = {"sha256": "0" * 64}
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="outside the bundle"):
        load_bundle(root)


def test_folder_without_manifest_and_missing_path(tmp_path):
    with pytest.raises(ModelError, match=r"manifest\.json is missing"):
        load_bundle(tmp_path)
    with pytest.raises(ModelError, match="not found"):
        load_bundle(tmp_path / "nope")


def test_corrupt_tflite_gives_clear_error(tmp_path):
    f = tmp_path / "broken.tflite"
    f.write_bytes(b"\x00garbage" * 100)
    (tmp_path / "labels.txt").write_text("x\n")
    with pytest.raises(ModelError, match="not a valid TFLite model"):
        create_classifier(load_bundle(f), "cpu")


def test_truncated_real_model_gives_clear_error(tmp_path):
    need_shared(CORAL_MODELS / "mobilenet_v2_1.0_224_quant.tflite")
    data = (CORAL_MODELS / "mobilenet_v2_1.0_224_quant.tflite").read_bytes()
    f = tmp_path / "cut.tflite"
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="corrupt or truncated"):
        create_classifier(load_bundle(f, CORAL_MODELS / "imagenet_labels.txt"), "cpu")


def test_compiled_model_on_cpu_says_so():
    need_shared(CORAL_MODELS / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")
    b = load_bundle(CORAL_MODELS / "mobilenet_v1_0.25_128_quant_edgetpu.tflite",
                    CORAL_MODELS / "imagenet_labels.txt")
    with pytest.raises(ModelError, match="compiled for the Edge TPU"):
        create_classifier(b, "cpu")


def test_label_count_must_match_outputs(tmp_path):
    need_shared(CORAL_MODELS / "mobilenet_v2_1.0_224_quant.tflite")
    labels = tmp_path / "l.txt"
    labels.write_text("a\nb\n")
    b = load_bundle(CORAL_MODELS / "mobilenet_v2_1.0_224_quant.tflite", labels)
    with pytest.raises(ModelError, match="1001 outputs but the labels file has 2"):
        create_classifier(b, "cpu")
