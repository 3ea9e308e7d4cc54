"""The daemon as a real subprocess against a real mosquitto, with the replay camera."""

import json
import shutil
import signal

import jsonschema
import pytest

from device.messages import load_schema

from .conftest import CORAL_IMAGES, CORAL_MODELS, Recorder, run_cli, write_config

EXPECTED = {"parrot.jpg": "macaw", "cat.bmp": "Egyptian cat", "bird.bmp": "chickadee"}
MODEL = CORAL_MODELS / "mobilenet_v2_1.0_224_quant.tflite"
LABELS = CORAL_MODELS / "imagenet_labels.txt"


def validate(payload: dict, name: str) -> None:
    jsonschema.validate(payload, load_schema(name))


@pytest.fixture
def coral_replay(tmp_path):
    paths = [MODEL, LABELS, *(CORAL_IMAGES / n for n in EXPECTED)]
    missing = [p for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"needs Coral's model and images in ../shared ({missing[0]} absent)")
    folder = tmp_path / "replay"
    folder.mkdir()
    # replay plays in file-name order: prefix to fix the order
    for i, name in enumerate(EXPECTED):
        shutil.copy(CORAL_IMAGES / name, folder / f"{i}_{name}")
    return folder


def coral_config(tmp_path, folder, port, loop=False, **model):
    return write_config(
        tmp_path / "d.toml",
        camera={"type": "replay", "source": str(folder), "fps": 20, "loop": loop},
        model={"path": str(MODEL), "labels": str(LABELS), "backend": "cpu", **model},
        mqtt={"host": "127.0.0.1", "port": port, "device_id": "pi-test",
              "status_interval": 0.5})


def test_classify_cli_coral_images(coral_replay):
    images = sorted(coral_replay.iterdir())
    r = run_cli("classify", "--json", "--model", str(MODEL), "--labels", str(LABELS),
                "--backend", "cpu", *map(str, images))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 3
    for line, img in zip(lines, images, strict=True):
        expected = EXPECTED[img.name.split("_", 1)[1]]
        assert line["label"] == expected and line["score"] > 0.5, line
        validate({k: v for k, v in line.items() if k != "image"}, "result")


def test_classify_cli_human_output_and_bad_image(coral_replay, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    r = run_cli("classify", "--model", str(MODEL), "--labels", str(LABELS), "--backend", "cpu",
                str(coral_replay / "0_parrot.jpg"), str(bad))
    assert r.returncode == 1
    assert "macaw" in r.stdout and "bad.jpg: not a readable image" in r.stderr


def test_daemon_results_over_mqtt(coral_replay, tmp_path, broker, daemon_factory):
    rec = Recorder(broker.port, "coral-classifier/pi-test/#")
    try:
        d = daemon_factory(coral_config(tmp_path, coral_replay, broker.port))
        assert d.proc.wait(60) == 0, d.output()
        rec.wait_for(lambda r: r.on("availability")[-1:] == [b"stopped"], 10, "stopped")
        results = rec.json_on("/result")
        assert [m["label"] for m in results] == ["macaw", "Egyptian cat", "chickadee"]
        assert [m["seq"] for m in results] == [1, 2, 3]
        for m in results:
            validate(m, "result")
            assert m["backend"] == "cpu" and m["model"]["name"] == MODEL.stem
            assert m["latency_ms"]["total"] >= m["latency_ms"]["inference"] > 0
        statuses = rec.json_on("/status")
        assert statuses, "no status published"
        for s in statuses:
            validate(s, "status")
        assert statuses[-1]["state"] == "stopped" and statuses[-1]["frames"] == 3
        for a in rec.on("availability"):
            jsonschema.validate(a.decode(), load_schema("availability"))
    finally:
        rec.close()


def test_availability_lifecycle(coral_replay, tmp_path, broker, daemon_factory):
    """online while running; the broker's last will says offline after SIGKILL;
    stopped after SIGTERM; seq keeps increasing while looping."""
    cfg = coral_config(tmp_path, coral_replay, broker.port, loop=True)
    rec = Recorder(broker.port, "coral-classifier/pi-test/#")
    try:
        d = daemon_factory(cfg)
        rec.wait_for(lambda r: len(r.on("/result")) >= 8, 60, "8 results")
        assert rec.on("availability")[-1] == b"online"
        seqs = [m["seq"] for m in rec.json_on("/result")]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert d.signal(signal.SIGKILL) == -signal.SIGKILL
        rec.wait_for(lambda r: r.on("availability")[-1] == b"offline", 10, "last will")

        d2 = daemon_factory(cfg)
        rec.wait_for(lambda r: r.on("availability")[-1] == b"online", 30, "online again")
        assert d2.signal(signal.SIGTERM) == 0
        rec.wait_for(lambda r: r.on("availability")[-1] == b"stopped", 10, "stopped")
    finally:
        rec.close()
    # retained: a late subscriber learns the last state
    late = Recorder(broker.port, "coral-classifier/pi-test/availability")
    try:
        late.wait_for(lambda r: r.on("availability") == [b"stopped"], 5, "retained stopped")
    finally:
        late.close()


def test_command_reply_and_malformed_payload(coral_replay, tmp_path, broker, daemon_factory):
    import paho.mqtt.client as mqtt

    rec = Recorder(broker.port, "coral-classifier/pi-test/#")
    d = daemon_factory(coral_config(tmp_path, coral_replay, broker.port, loop=True))
    try:
        rec.wait_for(lambda r: len(r.on("/result")) >= 1, 60, "a result")
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        c.publish("coral-classifier/pi-test/cmd/status", b"{not json", qos=1).wait_for_publish(5)
        c.publish("coral-classifier/pi-test/cmd/fly", b"{}", qos=1).wait_for_publish(5)
        c.publish("coral-classifier/pi-test/cmd/status", b"", qos=1).wait_for_publish(5)
        rec.wait_for(lambda r: len(r.on("cmd/status/reply")) >= 2 and r.on("cmd/fly/reply"),
                     10, "replies")
        c.loop_stop()
        c.disconnect()
        replies = rec.json_on("cmd/status/reply")
        assert replies[0]["ok"] is False and "not a JSON object" in replies[0]["error"]
        assert replies[1] == {"ok": True}
        fly = rec.json_on("cmd/fly/reply")[0]
        assert fly["ok"] is False and "unknown command" in fly["error"]
        assert d.proc.poll() is None, "a bad command must not stop the daemon"
    finally:
        rec.close()


def test_edgetpu_backend_without_tpu_says_what_to_check(coral_replay, tmp_path, broker,
                                                         daemon_factory):
    d = daemon_factory(coral_config(tmp_path, coral_replay, broker.port, backend="edgetpu"))
    rc = d.proc.wait(60)
    out = d.output()
    assert rc == 4, out
    assert "libedgetpu" in out and "coral-classifier doctor" in out
    assert "Traceback" not in out


def test_auto_backend_without_fallback_refuses(coral_replay, tmp_path, broker, daemon_factory):
    d = daemon_factory(coral_config(tmp_path, coral_replay, broker.port, backend="auto"))
    assert d.proc.wait(60) == 4
    assert "allow_cpu_fallback" in d.output()


def test_bad_config_exits_2_naming_the_key(tmp_path, daemon_factory):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[model]\nbackend = "tpu"\n')
    d = daemon_factory(cfg)
    assert d.proc.wait(30) == 2
    assert "model.backend" in d.output() and "Traceback" not in d.output()


def test_bundle_with_wrong_sha256_refused(tmp_path, broker, daemon_factory):
    from device.bundle import write_manifest

    if not MODEL.exists():
        pytest.skip(f"needs {MODEL}")
    root = tmp_path / "bundle"
    root.mkdir()
    shutil.copy(MODEL, root / "model_quant.tflite")
    shutil.copy(LABELS, root / "labels.txt")
    write_manifest(root, {"name": "x", "version": "1", "input": {"width": 224, "height": 224}})
    with open(root / "model_quant.tflite", "r+b") as f:
        f.seek(5000)
        f.write(b"\x01\x02\x03")
    cfg = write_config(tmp_path / "c.toml", camera={"type": "replay", "source": str(tmp_path)},
                       model={"path": str(root), "backend": "cpu"},
                       mqtt={"port": broker.port})
    d = daemon_factory(cfg)
    assert d.proc.wait(30) == 3
    assert "model_quant.tflite does not match its sha256" in d.output()
