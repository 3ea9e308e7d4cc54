"""Bundles that must be refused with a clear error, at start and on reload, while the old
model keeps serving: a manifest that does not fit its schema, a hostile labels file, a
model with more outputs than the bundle declares, a float-input model, a failing
self-test. Real files, real TFLite models, a real daemon and broker."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from device.bundle import load_bundle, write_manifest
from device.errors import ModelError
from device.inference import create_classifier
from device.tools.synthetic import write_sequence

from .conftest import ROOT, Recorder, write_config

DEMO = ROOT / "compiled_models" / "demo-notes"


def copy_demo(tmp_path: Path, name: str = "bundle") -> Path:
    root = tmp_path / name
    shutil.copytree(DEMO, root)
    return root


def rewrite(root: Path, edit) -> Path:
    """Change the manifest and re-hash every file (a well-formed but hostile bundle)."""
    m = json.loads((root / "manifest.json").read_text())
    m.pop("files")
    edit(m)
    write_manifest(root, m)
    return root


def raw_edit(root: Path, edit) -> Path:
    """Change the manifest *after* hashing (what a hand edit or a bad tool does)."""
    m = json.loads((root / "manifest.json").read_text())
    edit(m)
    (root / "manifest.json").write_text(json.dumps(m))
    return root


def tiny_tflite(outputs: int = 1, quantize: bool = True) -> bytes:
    """A 96x96 model with 4 classes (like the demo bundle), made by TensorFlow here."""
    import tensorflow as tf

    inp = tf.keras.Input((96, 96, 3))
    x = tf.keras.layers.Conv2D(4, 3, strides=4)(inp)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    heads = [tf.keras.layers.Dense(4, activation="softmax", name=f"h{i}")(x)
             for i in range(outputs)]
    model = tf.keras.Model(inp, heads)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: (
            [np.random.default_rng(i).uniform(0, 255, (1, 96, 96, 3)).astype(np.float32)]
            for i in range(8))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    return conv.convert()


def with_model(tmp_path: Path, name: str, model: bytes) -> Path:
    root = copy_demo(tmp_path, name)
    (root / "model_quant.tflite").write_bytes(model)
    return rewrite(root, lambda m: m.pop("golden"))


HOSTILE_MANIFESTS = {
    "golden without file": lambda m: m["golden"].append({"label": "empty"}),
    "int sha256": lambda m: m["files"]["labels.txt"].update(sha256=12345),
    "golden outside files": lambda m: m["golden"].append({"file": "../../etc/passwd",
                                                          "label": "empty"}),
    "input not a mapping": lambda m: m.update(input=[96, 96]),
    "huge input": lambda m: m["input"].update(width=10**9),
}


@pytest.mark.parametrize("case", HOSTILE_MANIFESTS)
def test_hostile_manifest_is_a_model_error(tmp_path, case):
    root = raw_edit(copy_demo(tmp_path), HOSTILE_MANIFESTS[case])
    with pytest.raises(ModelError, match=r"manifest|golden|sha256"):
        load_bundle(root)


def test_huge_label_id_is_refused_at_once(tmp_path):
    root = copy_demo(tmp_path)
    (root / "labels.txt").write_text("0 empty\n999999999 note\n")
    rewrite(root, lambda m: m.pop("labels"))
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="ids must be below"):
        load_bundle(root)
    assert time.monotonic() - t0 < 1.0


@pytest.mark.train
def test_model_with_an_undeclared_second_output_is_refused(tmp_path):
    model = tiny_tflite(outputs=2)
    root = with_model(tmp_path, "two", model)
    with pytest.raises(ModelError, match="2 output"):
        create_classifier(load_bundle(root), "cpu")
    # the same model as a bare file (an open-world export taken out of its bundle)
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(model)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\nd\n")
    with pytest.raises(ModelError, match="Give the bundle folder"):
        create_classifier(load_bundle(bare, labels), "cpu")


@pytest.mark.train
def test_float_input_model_is_refused_when_the_manifest_says_uint8(tmp_path):
    root = with_model(tmp_path, "float", tiny_tflite(quantize=False))
    with pytest.raises(ModelError, match="float32 input but the manifest says uint8"):
        create_classifier(load_bundle(root), "cpu")


def daemon_config(tmp_path: Path, port: int, bundle: Path) -> Path:
    replay = tmp_path / "replay"
    write_sequence(replay, ["note_5", "note_10"], gap=2, frames_per_object=3, seed=1)
    return write_config(
        tmp_path / "d.toml",
        camera={"type": "replay", "source": str(replay), "fps": 20, "loop": True},
        model={"path": str(bundle), "backend": "cpu"},
        mqtt={"host": "127.0.0.1", "port": port, "device_id": "hostile",
              "result_max_rate": 10})


@pytest.mark.train
def test_hostile_bundles_on_reload_keep_the_old_model_serving(tmp_path, broker,
                                                              daemon_factory):
    import paho.mqtt.client as mqtt

    live = copy_demo(tmp_path, "live")
    good = json.loads((live / "manifest.json").read_text())
    rec = Recorder(broker.port, "coral-classifier/hostile/#")
    d = daemon_factory(daemon_config(tmp_path, broker.port, live))
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        rec.wait_for(lambda r: r.on("/result"), 60, "results from the good bundle")
        breakers = [
            lambda: raw_edit(live, HOSTILE_MANIFESTS["golden without file"]),
            lambda: raw_edit(live, HOSTILE_MANIFESTS["int sha256"]),
            lambda: ((live / "labels.txt").write_text("0 empty\n999999999 note\n"),
                     rewrite(live, lambda m: m.pop("labels"))),
            lambda: ((live / "model_quant.tflite").write_bytes(tiny_tflite(outputs=2)),
                     rewrite(live, lambda m: None)),
            lambda: ((live / "model_quant.tflite").write_bytes(tiny_tflite(quantize=False)),
                     rewrite(live, lambda m: None)),
            lambda: rewrite(live, lambda m: m["golden"][0].update(label="note_50")),
        ]
        for i, breaker in enumerate(breakers):
            shutil.rmtree(live)
            shutil.copytree(DEMO, live)
            breaker()
            c.publish("coral-classifier/hostile/cmd/reload", b"{}", qos=1).wait_for_publish(5)
            rec.wait_for(lambda r, n=i + 1: len(r.json_on("cmd/reload/reply")) >= n, 60,
                         f"reload reply {i + 1}")
            reply = rec.json_on("cmd/reload/reply")[i]
            assert reply["ok"] is False and reply["model"]["sha256"] == \
                good["files"]["model_quant.tflite"]["sha256"], reply
            seen = len(rec.on("/result"))
            rec.wait_for(lambda r, s=seen: len(r.on("/result")) > s + 2, 20, "still serving")
        assert d.proc.poll() is None and rec.on("/availability")[-1] == b"online"
        assert "Traceback" not in d.output()
    finally:
        c.loop_stop()
        c.disconnect()
        rec.close()

    # after a restart the bad bundle is refused too: the self-test runs at start
    d.stop()
    code = daemon_factory(daemon_config(tmp_path, broker.port, live)).proc.wait(60)
    assert code == ModelError.exit_code
