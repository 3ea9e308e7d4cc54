"""A burst of commands larger than the command queue: every command is either answered or
counted as dropped (status `commands_dropped`), none vanishes silently. Real daemon, real
mosquitto."""

import paho.mqtt.client as mqtt

from device.tools.synthetic import write_sequence

from .conftest import ROOT, Recorder, write_config

DEMO = ROOT / "compiled_models" / "demo-notes"
BURST = 200


def test_a_burst_of_200_commands_is_answered_or_counted(tmp_path, broker, daemon_factory):
    replay = tmp_path / "replay"
    write_sequence(replay, ["note_5"], gap=2, frames_per_object=2)
    cfg = write_config(
        tmp_path / "flood.toml",
        camera={"type": "replay", "source": str(replay), "fps": 20, "loop": True},
        model={"path": str(DEMO), "backend": "cpu"},
        mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "flood-1",
              "status_interval": 0.3})
    rec = Recorder(broker.port, "coral-classifier/flood-1/#")
    d = daemon_factory(cfg)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    try:
        rec.wait_for(lambda r: r.on("availability")[-1:] == [b"online"], 30, "online")
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        sent = [pub.publish("coral-classifier/flood-1/cmd/snapshot", b'{"quality": 100}',
                            qos=1) for _ in range(BURST)]
        for info in sent:
            info.wait_for_publish(10)

        def accounted(r) -> bool:
            replies = len(r.on("cmd/snapshot/reply"))
            dropped = max(s.get("commands_dropped", 0) for s in r.json_on("/status"))
            return replies + dropped == BURST

        rec.wait_for(accounted, 60, f"replies + commands_dropped == {BURST}")
        replies = len(rec.on("cmd/snapshot/reply"))
        dropped = rec.json_on("/status")[-1]["commands_dropped"]
        print(f"{replies} replies, {dropped} dropped")
        assert replies + dropped == BURST
        if dropped:
            out = d.output()
            assert 1 <= out.count("command queue full") < max(2, dropped), "once per burst"
            assert f"{dropped} command(s) were dropped in that burst" in out
        assert d.proc.poll() is None
    finally:
        pub.loop_stop()
        pub.disconnect()
        rec.close()
