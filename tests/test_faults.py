"""Faults a fleet meets, against a real mosquitto and a real daemon process: hostile
command payloads, retained commands, an inference worker that dies or hangs, and configs
that must be refused before they can misroute."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from device.tools.synthetic import write_sequence

from .conftest import ROOT, Recorder, run_cli, write_config

DEMO = ROOT / "compiled_models" / "demo-notes"


def stream_config(tmp_path: Path, port: int, device_id: str = "fault-1", fps: float = 30,
                  **model) -> Path:
    replay = tmp_path / "replay"
    if not replay.exists():
        write_sequence(replay, ["note_5", "note_10"], gap=2, frames_per_object=3, seed=3)
    return write_config(
        tmp_path / f"{device_id}.toml",
        camera={"type": "replay", "source": str(replay), "fps": fps, "loop": True},
        model={"path": str(DEMO), "backend": "cpu", **model},
        mqtt={"host": "127.0.0.1", "port": port, "device_id": device_id,
              "status_interval": 0.5, "result_max_rate": 20})


def controller(port: int) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def send(c: mqtt.Client, topic: str, payload: bytes, retain: bool = False) -> None:
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


def status_replies(rec: Recorder, base: str) -> list[dict]:
    return rec.json_on(f"{base}/cmd/status/reply")


HOSTILE = [
    b"[" * 100_000,  # RecursionError inside json.loads, on paho's thread, before
    b"{\"a\":" * 50_000,
    b"x" * 200_000,  # larger than any command needs
    b"\xff\xfe\x00garbage",
    b"1e999999",
    b"NaN",
    b"null",
    b"[]",
    b'"a string"',
    b'{"a": "' + b"[" * 10_000 + b'"}',  # brackets inside a string are fine, and small
    b'{"quality": true}',
    b'{"quality": 1e308}',
    b'{"quality": -5}',
    b'{"nonce": ["not", "a", "string"]}',
]


def test_hostile_payloads_get_error_replies_and_mqtt_stays_alive(tmp_path, broker,
                                                                  daemon_factory):
    base = "coral-classifier/fault-1"
    rec = Recorder(broker.port, f"{base}/#")
    d = daemon_factory(stream_config(tmp_path, broker.port))
    c = controller(broker.port)
    try:
        rec.wait_for(lambda r: r.on("/result"), 60, "a first result")
        send(c, f"{base}/cmd/status", b"[" * 100_000)  # the reproduced one
        send(c, f"{base}/cmd/status", b"[" * 10_000)  # small enough, too deep
        rec.wait_for(lambda r: len(status_replies(r, base)) >= 2, 10, "two replies")
        first, second = status_replies(rec, base)[:2]
        assert first["ok"] is False and "too large" in first["error"]
        assert second["ok"] is False and "nests deeper" in second["error"]
        for i, payload in enumerate(HOSTILE):
            name = ("status", "snapshot", "reload", "pause")[i % 4]
            send(c, f"{base}/cmd/{name}", payload)
        send(c, f"{base}/cmd/resume", b"")
        send(c, f"{base}/cmd/snapshot", b'{"quality": true}')
        rec.wait_for(lambda r: r.json_on("cmd/snapshot/reply") and any(
            "integer" in x.get("error", "") for x in r.json_on("cmd/snapshot/reply")), 15,
            "the bool quality refused")
        n = len(status_replies(rec, base))
        send(c, f"{base}/cmd/status", b"{}")
        rec.wait_for(lambda r: len(status_replies(r, base)) > n
                     and status_replies(r, base)[-1]["ok"], 15, "a normal command still works")
        seen = len(rec.on("/result"))
        rec.wait_for(lambda r: len(r.on("/result")) > seen + 5, 20, "results still flowing")
        assert rec.on("/availability")[-1] == b"online"
        assert d.proc.poll() is None, d.output()
        assert "Traceback" not in d.output()
    finally:
        c.loop_stop()
        c.disconnect()
        rec.close()


def test_retained_commands_are_ignored_at_start(tmp_path, broker, daemon_factory):
    base = "coral-classifier/fault-2"
    c = controller(broker.port)
    send(c, f"{base}/cmd/pause", b"{}", retain=True)  # (an empty payload would clear it)
    rec = Recorder(broker.port, f"{base}/#")
    d = daemon_factory(stream_config(tmp_path, broker.port, "fault-2"))
    try:
        rec.wait_for(lambda r: len(r.on("/result")) >= 10, 60, "results despite the pause")
        assert not rec.on("cmd/pause/reply"), "a retained command must not run"
        assert "ignored a retained command" in d.output()
        send(c, f"{base}/cmd/pause", b"")  # a live one still works
        rec.wait_for(lambda r: r.json_on("cmd/pause/reply"), 10, "the live pause")
    finally:
        send(c, f"{base}/cmd/pause", b"", retain=True)  # an empty retained one clears it
        c.loop_stop()
        c.disconnect()
        rec.close()


def worker_pid(daemon_pid: int) -> int:
    """The inference worker among the daemon's children (not multiprocessing's tracker)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{daemon_pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
                    return int(pid)
        time.sleep(0.1)
    raise AssertionError("no inference worker process found")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_worker_killed_or_hung_is_restarted_without_dropping_mqtt(tmp_path, broker,
                                                                  daemon_factory, sig):
    device_id = f"fault-3-{sig.name.lower()}"  # retained status is per device
    base = f"coral-classifier/{device_id}"
    rec = Recorder(broker.port, f"{base}/#")
    d = daemon_factory(stream_config(tmp_path, broker.port, device_id, inference_timeout=1.0))
    try:
        rec.wait_for(lambda r: len(r.on("/result")) >= 3, 60, "results")
        old = worker_pid(d.proc.pid)
        os.kill(old, sig)
        rec.wait_for(lambda r: any(s["worker_restarts"] >= 1 for s in r.json_on("/status")),
                     30, "a restart in status")
        new = worker_pid(d.proc.pid)
        assert new != old
        seen = len(rec.on("/result"))
        rec.wait_for(lambda r: len(r.on("/result")) > seen + 5, 30, "results after restart")
        status = rec.json_on("/status")[-1]
        assert status["errors"]["worker"] >= 1 and status["reconnects"] == 0
        assert b"offline" not in rec.on("/availability"), "the MQTT session never dropped"
        assert d.proc.poll() is None
    finally:
        rec.close()


@pytest.mark.parametrize("key,value,needle", [
    ("device_id", "a\u0000b", "device_id"),
    ("device_id", "site/vend-1", "device_id"),
    ("topic_prefix", "$SYS", "topic_prefix"),
    ("topic_prefix", "a//b", "topic_prefix"),
])
def test_unsafe_topic_ids_are_refused_by_check_config(tmp_path, key, value, needle):
    cfg = write_config(tmp_path / "c.toml", camera={}, model={},
                       mqtt={"host": "127.0.0.1", key: value})
    r = run_cli("check-config", str(cfg))
    assert r.returncode == 2 and needle in r.stderr, r.stderr


def test_wildcard_discovery_prefix_is_refused_by_check_config(tmp_path):
    """A '#' here once made paho's subscribe raise inside on_connect, killing MQTT."""
    cfg = write_config(tmp_path / "c.toml", camera={}, model={}, mqtt={},
                       homeassistant={"enabled": True, "discovery_prefix": "ha/#"})
    r = run_cli("check-config", str(cfg))
    assert r.returncode == 2 and "discovery_prefix" in r.stderr, r.stderr


def test_bad_metrics_address_is_refused_by_check_config(tmp_path):
    cfg = write_config(tmp_path / "c.toml", camera={}, model={}, mqtt={},
                       metrics={"port": 9100, "address": "not-an-address"})
    r = run_cli("check-config", str(cfg))
    assert r.returncode == 2 and "metrics.address" in r.stderr, r.stderr


def test_a_failing_on_connect_step_does_not_kill_mqtt(broker):
    """publish_counts raising on a corrupt outbox page inside on_connect once killed paho's
    network thread for good; now the step is reported and MQTT carries on."""
    from device.config import MqttConfig
    from device.mqtt.publisher import MqttPublisher

    pub = MqttPublisher(MqttConfig(host="127.0.0.1", port=broker.port, device_id="hook"),
                        "hook")
    later = threading.Event()

    def corrupt_page() -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    pub.on_connected += [corrupt_page, later.set]
    rec = Recorder(broker.port, "coral-classifier/hook/#")
    pub.start()
    try:
        assert pub.wait_connected(10)
        assert later.wait(10), "the other on-connect steps still run"
        assert pub.callback_errors >= 1 and "malformed" in pub.last_error
        # only now a failing PUBACK handler: the PUBACK of the retained "online" could
        # otherwise overwrite last_error before the check above (a race on a busy machine)
        pub.on_puback = lambda mid: (_ for _ in ()).throw(OSError("disk full at PUBACK"))
        ok, _ = pub.publish_qos1("coral-classifier/hook/x", b"1")  # its PUBACK raises too
        pub.publish("coral-classifier/hook/y", b"2", qos=1)
        rec.wait_for(lambda r: r.on("/y"), 10, "a publish after the failures")
        assert ok and pub.network_alive
    finally:
        pub.close()
        rec.close()
