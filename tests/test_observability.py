"""doctor on this machine, Prometheus metrics, Home Assistant discovery, JSON logs."""

import json
import urllib.request

import paho.mqtt.client as mqtt

from device.tools.synthetic import write_sequence

from .conftest import ROOT, Recorder, free_port, run_cli, write_config

DEMO = ROOT / "compiled_models" / "demo-notes"


def doctor_config(tmp_path, port, **model):
    return write_config(tmp_path / "doc.toml", camera={"type": "replay", "source": "x"},
                        model={"path": str(DEMO), "backend": "cpu", **model},
                        mqtt={"host": "127.0.0.1", "port": port})


def checks_of(r) -> dict:
    return {c["name"]: c for c in json.loads(r.stdout)["checks"]}


def test_doctor_passes_on_what_this_machine_has(tmp_path, broker):
    r = run_cli("doctor", "--config", str(doctor_config(tmp_path, broker.port)), "--json")
    assert r.returncode == 0, r.stdout
    checks = checks_of(r)
    assert checks["python"]["status"] == "ok"
    assert "ai_edge_litert" in checks["TFLite runtimes"]["detail"]
    assert checks["broker"]["status"] == "ok" and checks["model"]["status"] == "ok"
    assert checks["labels vs outputs"]["status"] == "ok"
    # what this machine lacks is reported, with a fix, but does not block a CPU setup
    assert checks["libedgetpu"]["status"] == "warn" and "apt" in checks["libedgetpu"]["fix"]
    assert checks["picamera2"]["status"] == "warn"
    assert "system-site-packages" in checks["picamera2"]["fix"]


def test_doctor_blocks_on_missing_tpu_broker_or_model(tmp_path):
    closed = free_port()
    cfg = doctor_config(tmp_path, closed, backend="edgetpu")
    r = run_cli("doctor", "--config", str(cfg), "--json")
    assert r.returncode == 1
    checks = checks_of(r)
    assert checks["libedgetpu"]["status"] == "fail"
    assert checks["Edge TPU devices"]["status"] == "fail"
    assert checks["broker"]["status"] == "fail" and "cannot reach" in checks["broker"]["detail"]
    assert checks["model for the Edge TPU"]["status"] == "fail"
    text = run_cli("doctor", "--config", str(cfg))
    assert "✘ broker" in text.stdout and "fix:" in text.stdout
    assert text.stdout.rstrip().endswith("blocking problems found")


def test_doctor_without_config_checks_the_machine():
    r = run_cli("doctor")
    assert r.returncode == 0 and "✔ python" in r.stdout and "broker" not in r.stdout


def test_metrics_and_home_assistant_discovery(tmp_path, broker, daemon_factory):
    replay = tmp_path / "replay"
    write_sequence(replay, ["note_5", "note_10"], gap=3, frames_per_object=4)
    port = free_port()
    cfg = write_config(tmp_path / "obs.toml",
                       camera={"type": "replay", "source": str(replay), "fps": 30, "loop": True},
                       model={"path": str(DEMO), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "obs-1"},
                       decision={"mode": "event", "background_labels": ["empty"]},
                       metrics={"port": port, "address": "127.0.0.1"},
                       homeassistant={"enabled": True})
    rec = Recorder(broker.port, "homeassistant/#")
    events = Recorder(broker.port, "coral-classifier/obs-1/event")
    daemon_factory(cfg)
    try:
        node = "coral_classifier_obs_1"
        # The session's broker holds other tests' retained discovery: wait for this node's.
        rec.wait_for(lambda r: any(t.endswith(f"{node}/count_note_5/config")
                                   for t, _, _ in r.messages)
                     and any(t.endswith(f"{node}/last_result/config") for t, _, _ in r.messages),
                     30, "discovery configs")
        topics = {t for t, _, retain in rec.messages}
        assert f"homeassistant/sensor/{node}/last_result/config" in topics
        assert f"homeassistant/sensor/{node}/count_note_5/config" in topics
        assert f"homeassistant/sensor/{node}/count_empty/config" not in topics  # background
        cfg_count = json.loads(next(p for t, p, _ in rec.messages
                                    if t.endswith(f"{node}/count_note_5/config")))
        assert cfg_count["state_topic"] == "coral-classifier/obs-1/counts"
        assert cfg_count["device"]["identifiers"] == [node]
        def mine(r: Recorder) -> int:
            return sum(f"/{node}/" in t for t, _, _ in r.messages)

        n = mine(rec)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        c.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
        rec.wait_for(lambda r: mine(r) >= n + 6, 10, "re-announced after HA restart")
        c.loop_stop()
        c.disconnect()

        events.wait_for(lambda r: len(r.messages) >= 1, 30, "an event")
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        text = body.decode()
        frames = float(next(line.split()[-1] for line in text.splitlines()
                            if line.startswith("coral_frames_total")))
        assert frames > 0
        assert "coral_inference_seconds_bucket" in text and "coral_outbox_events" in text
        assert 'coral_model_info{backend="cpu",name="demo-notes"' in text
        assert float(next(line.split()[-1] for line in text.splitlines()
                          if line.startswith("coral_events_total"))) >= 1
    finally:
        rec.close()
        events.close()


def test_json_log_format(tmp_path):
    r = run_cli("--log-format", "json", "classify", "--model", str(DEMO), "--backend", "cpu",
                str(tmp_path / "missing.png"))
    lines = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    assert any(entry["level"] == "ERROR" and "missing.png" in entry["msg"] for entry in lines)
    assert all({"ts", "level", "logger", "msg"} <= set(entry) for entry in lines)
