"""Vending/counting: one event per object, nothing lost through broker restarts and SIGKILL,
counts that survive restarts, and commands."""

import signal

import jsonschema
import paho.mqtt.client as mqtt
import pytest

from device.messages import load_schema
from device.tools.synthetic import write_sequence

from .conftest import ROOT, Broker, DaemonProcess, Recorder, wait_until, write_config

DEMO = ROOT / "compiled_models" / "demo-notes"
PASSES = ["note_5", "note_10", "note_20", "note_5", "note_20", "note_10", "note_10"]


def event_config(tmp_path, replay, port, fps=50, loop=False, device_id="vend-1", **decision):
    return write_config(
        tmp_path / f"{device_id}.toml",
        camera={"type": "replay", "source": str(replay), "fps": fps, "loop": loop},
        model={"path": str(DEMO), "backend": "cpu"},
        mqtt={"host": "127.0.0.1", "port": port, "device_id": device_id,
              "status_interval": 1.0},
        decision={"mode": "event", "background_labels": ["empty"], "threshold": 0.6,
                  **decision})


def test_event_mode_gives_exactly_the_passes_in_order(tmp_path, broker, daemon_factory):
    replay = tmp_path / "replay"
    write_sequence(replay, PASSES, gap=4, frames_per_object=5, seed=11)
    rec = Recorder(broker.port, "coral-classifier/vend-1/#")
    try:
        d = daemon_factory(event_config(tmp_path, replay, broker.port))
        assert d.proc.wait(60) == 0, d.output()
        rec.wait_for(lambda r: r.on("availability")[-1:] == [b"stopped"], 10, "stopped")
        events = rec.json_on("/event")
        assert [e["label"] for e in events] == PASSES
        assert [e["seq"] for e in events] == list(range(1, len(PASSES) + 1))
        for e in events:
            jsonschema.validate(e, load_schema("event"))
            assert e["frames"] >= 3 and e["first_ts"] <= e["last_ts"]
            assert e["model"]["sha256"] and e["device_id"] == "vend-1"
        assert not rec.on("/result"), "event mode publishes events, not per-frame results"
        counts = rec.json_on("/counts")[-1]
        jsonschema.validate(counts, load_schema("counts"))
        assert counts["counts"] == {"note_5": 2, "note_10": 3, "note_20": 2}
    finally:
        rec.close()

    # counts survive a restart: a second run adds to them
    rec = Recorder(broker.port, "coral-classifier/vend-1/counts")
    try:
        d = daemon_factory(event_config(tmp_path, replay, broker.port))
        assert d.proc.wait(60) == 0
        rec.wait_for(lambda r: r.json_on("counts") and
                     r.json_on("counts")[-1]["counts"].get("note_10") == 6, 10, "doubled counts")
    finally:
        rec.close()


def test_no_event_lost_through_broker_restarts_and_sigkill(tmp_path, daemon_factory):
    """500+ events; the broker is stopped and restarted twice and the daemon is SIGKILLed
    and restarted once: after dedupe by event_id nothing is missing, nothing invented."""
    replay = tmp_path / "replay"
    write_sequence(replay, ["note_5", "note_10", "note_20"] * 100, gap=2, frames_per_object=3,
                   seed=5)
    conf = "persistence true\npersistence_location {}/\nautosave_interval 1\n" \
           "max_queued_messages 100000\n"
    broker = Broker(tmp_path, conf.format(tmp_path))
    port = broker.port
    consumer = Recorder(port, "coral-classifier/vend-9/event", client_id="controller-1")
    cfg = event_config(tmp_path, replay, port, fps=150, device_id="vend-9",
                       min_frames=2, window=3, empty_frames=2)

    def events() -> int:
        return len(consumer.unique("/event"))

    def restart_broker(d: DaemonProcess, after_events: int) -> None:
        """Once `after_events` have arrived, stop the broker until the daemon has noticed
        (its log says it lost the broker), then start it again on the same port."""
        nonlocal broker
        wait_until(lambda: events() >= after_events, 60, f"{after_events} events")
        lost = d.output().count("MQTT disconnected")
        broker.proc.send_signal(signal.SIGTERM)  # mosquitto saves its persistence on TERM
        broker.proc.wait(10)
        wait_until(lambda: d.output().count("MQTT disconnected") > lost, 30,
                   "the daemon noticing the broker is gone")
        broker = Broker.restart(broker)

    try:
        d1 = daemon_factory(cfg)
        restart_broker(d1, 40)
        restart_broker(d1, events() + 40)
        wait_until(lambda: events() >= 220, 60, "events after two broker restarts")
        d1.proc.send_signal(signal.SIGKILL)
        d1.proc.wait(10)
        d2 = daemon_factory(cfg)  # same state dir: replays its outbox, keeps counting
        assert d2.proc.wait(120) == 0, d2.output()[-2000:]
        rec = Recorder(port, "coral-classifier/vend-9/counts")
        rec.wait_for(lambda r: r.json_on("counts"), 10, "retained counts")
        total = sum(rec.json_on("counts")[-1]["counts"].values())
        rec.close()
        consumer.wait_for(lambda r: len(r.unique("/event")) >= total, 30, f"{total} events")
        unique = consumer.unique("/event")
        seqs = sorted(e["seq"] for e in unique.values())
        assert total >= 500, f"only {total} events were decided"
        assert seqs == list(range(1, total + 1)), \
            f"missing seqs: {sorted(set(range(1, total + 1)) - set(seqs))[:10]}"
        assert len(unique) == total  # none invented: one id per seq, as many as counted
        first_arrival = []
        seen = set()
        arrived = consumer.json_on("/event")
        for e in arrived:
            if e["event_id"] not in seen:
                seen.add(e["event_id"])
                first_arrival.append(e["seq"])
        assert first_arrival == sorted(first_arrival), "events must arrive in order"
        print(f"{total} events, {len(arrived) - total} re-deliveries")
    finally:
        consumer.close()
        broker.stop()


@pytest.mark.parametrize("payload, needle", [
    (b"{not json", "not a JSON object"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"quality": 500}', "quality must be an integer"),
])
def test_malformed_commands_get_error_replies(tmp_path, broker, daemon_factory, payload, needle):
    replay = tmp_path / "replay"
    write_sequence(replay, ["note_5"], gap=2, frames_per_object=2)
    rec = Recorder(broker.port, "coral-classifier/vend-2/#")
    d = daemon_factory(event_config(tmp_path, replay, broker.port, loop=True,
                                    device_id="vend-2", fps=20))
    try:
        # the daemon subscribes to its commands before it publishes "online" on the same
        # connection, and the broker handles one client's packets in order: seeing
        # "online" means a command sent now is delivered
        rec.wait_for(lambda r: r.on("availability")[-1:] == [b"online"], 30, "online")
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        pub.publish("coral-classifier/vend-2/cmd/snapshot", payload, qos=1).wait_for_publish(5)
        rec.wait_for(lambda r: r.on("cmd/snapshot/reply"), 10, "reply")
        reply = rec.json_on("cmd/snapshot/reply")[0]
        jsonschema.validate(reply, load_schema("reply"))
        assert reply["ok"] is False and needle in reply["error"]
        # and the daemon still answers a good one
        pub.publish("coral-classifier/vend-2/cmd/snapshot", b"{}", qos=1).wait_for_publish(5)
        rec.wait_for(lambda r: len(r.on("cmd/snapshot/reply")) >= 2, 10, "second reply")
        good = rec.json_on("cmd/snapshot/reply")[1]
        assert good["ok"] is True and good["bytes"] > 100
        rec.wait_for(lambda r: r.on("vend-2/snapshot"), 10, "the JPEG")
        assert rec.on("vend-2/snapshot")[0][:2] == b"\xff\xd8"
        pub.loop_stop()
        pub.disconnect()
        assert d.proc.poll() is None
    finally:
        rec.close()


def test_pause_resume_reset_counts_and_reload(tmp_path, broker, daemon_factory):
    replay = tmp_path / "replay"
    write_sequence(replay, ["note_20"], gap=3, frames_per_object=4)
    rec = Recorder(broker.port, "coral-classifier/vend-3/#")
    d = daemon_factory(event_config(tmp_path, replay, broker.port, loop=True,
                                    device_id="vend-3", fps=40))
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()

    def command(name, body=b"{}"):
        n = len(rec.on(f"cmd/{name}/reply"))
        pub.publish(f"coral-classifier/vend-3/cmd/{name}", body, qos=1).wait_for_publish(5)
        rec.wait_for(lambda r: len(r.on(f"cmd/{name}/reply")) > n, 30, f"{name} reply")
        return rec.json_on(f"cmd/{name}/reply")[-1]

    try:
        rec.wait_for(lambda r: len(r.on("/event")) >= 2, 60, "events")
        assert command("pause") == {"ok": True, "state": "paused"}
        # frames keep flowing while paused (frames_seen), none is classified: once the
        # ones in flight are through, a few passes' worth of frames make no event
        seen = rec.json_on("/status")[-1]["frames_seen"]
        rec.wait_for(lambda r: r.json_on("/status")[-1]["frames_seen"] >= seen + 20, 30,
                     "frames seen while paused")
        n, seen = len(rec.on("/event")), rec.json_on("/status")[-1]["frames_seen"]
        rec.wait_for(lambda r: r.json_on("/status")[-1]["frames_seen"] >= seen + 40, 30,
                     "more frames seen while paused")
        assert len(rec.on("/event")) == n, "no events while paused"
        assert rec.json_on("/status")[-1]["state"] == "paused"
        assert command("resume")["ok"]
        rec.wait_for(lambda r: len(r.on("/event")) > n, 30, "events after resume")
        assert command("reset_counts") == {"ok": True, "counts": {}}
        rec.wait_for(lambda r: any(c["counts"] == {} for c in r.json_on("/counts")), 10,
                     "zeroed counts")
        reply = command("reload")
        assert reply["ok"] is True and reply["model"]["name"] == "demo-notes"
        statuses = len(rec.on("/status"))
        d.proc.send_signal(signal.SIGHUP)  # systemd's ExecReload: the same reload
        rec.wait_for(lambda r: len(r.on("/status")) > statuses, 10, "status after SIGHUP")
        assert d.proc.poll() is None and "reloaded: now demo-notes" in d.output()
    finally:
        pub.loop_stop()
        pub.disconnect()
        rec.close()


def test_commands_can_be_switched_off(tmp_path, broker, daemon_factory):
    replay = tmp_path / "replay"
    write_sequence(replay, ["note_5"], gap=2, frames_per_object=2)
    cfg = event_config(tmp_path, replay, broker.port, loop=True, device_id="vend-4")
    cfg.write_text(cfg.read_text().replace('status_interval = 1.0',
                                           'status_interval = 1.0\ncommands = false'))
    rec = Recorder(broker.port, "coral-classifier/vend-4/#")
    daemon_factory(cfg)
    try:
        rec.wait_for(lambda r: r.on("availability")[-1:] == [b"online"], 30, "online")
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        pub.publish("coral-classifier/vend-4/cmd/pause", b"{}", qos=1).wait_for_publish(5)
        rec.wait_for(lambda r: r.json_on("/status"), 30, "a status")
        seen = rec.json_on("/status")[-1]["frames_seen"]
        rec.wait_for(lambda r: r.json_on("/status")[-1]["frames_seen"] >= seen + 20, 30,
                     "frames after the command")  # it had every chance to pause
        assert not rec.on("cmd/pause/reply")
        assert rec.json_on("/status")[-1]["state"] == "running"
        pub.loop_stop()
        pub.disconnect()
    finally:
        rec.close()


def test_a_clean_stop_hands_the_outbox_to_the_broker_first(tmp_path, broker, daemon_factory):
    """The replay ends right after its last pass: the events decided last are sent and
    acknowledged before the daemon exits, not left for the next start."""
    import sqlite3

    replay = tmp_path / "replay"
    write_sequence(replay, PASSES, gap=3, frames_per_object=5, seed=4)
    rec = Recorder(broker.port, "coral-classifier/vend-drain/event")
    try:
        d = daemon_factory(event_config(tmp_path, replay, broker.port, fps=200,
                                        device_id="vend-drain"))
        assert d.proc.wait(60) == 0, d.output()
        left = sqlite3.connect(tmp_path / "state" / "outbox-vend-drain.sqlite").execute(
            "SELECT COUNT(*) FROM outbox").fetchone()[0]
        assert left == 0
        rec.wait_for(lambda r: len(r.on("/event")) == len(PASSES), 10, "every event")
    finally:
        rec.close()


def test_reset_counts_racing_events_leaves_retained_counts_equal_to_the_store(
        tmp_path, broker, daemon_factory):
    import sqlite3

    replay = tmp_path / "replay"
    write_sequence(replay, PASSES, gap=2, frames_per_object=4, seed=6)
    rec = Recorder(broker.port, "coral-classifier/vend-race/#")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        d = daemon_factory(event_config(tmp_path, replay, broker.port, fps=300, loop=True,
                                        device_id="vend-race"))
        for n in range(1, 16):  # a reset each time an event lands: they interleave
            rec.wait_for(lambda r, n=n: len(r.on("/event")) >= 2 * n, 60, "events")
            c.publish("coral-classifier/vend-race/cmd/reset_counts", b"", qos=1)
        rec.wait_for(lambda r: len(r.on("cmd/reset_counts/reply")) >= 15, 30, "replies")
        assert d.signal(signal.SIGTERM) == 0
    finally:
        c.loop_stop()
        c.disconnect()
        rec.close()
    stored = dict(sqlite3.connect(tmp_path / "state" / "outbox-vend-race.sqlite").execute(
        "SELECT label, n FROM counts").fetchall())
    late = Recorder(broker.port, "coral-classifier/vend-race/counts")  # the retained one
    try:
        late.wait_for(lambda r: r.json_on("counts"), 10, "retained counts")
        assert late.json_on("counts")[-1]["counts"] == stored
    finally:
        late.close()
