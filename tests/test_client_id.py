"""Two devices with the same device config (a copied config or SD card, each with its own
state folder) on a broker that does not tie client ids to user names: each keeps its own
connection; neither takes the other's over (no flapping)."""

import re

from device.mqtt.identity import client_id, install_suffix
from device.tools.synthetic import write_sequence

from .conftest import ROOT, Recorder, write_config

DEMO = ROOT / "compiled_models" / "demo-notes"


def test_the_suffix_is_made_once_and_kept(tmp_path):
    first = install_suffix(tmp_path / "state")
    assert re.fullmatch(r"[0-9a-f]{8}", first)
    assert install_suffix(tmp_path / "state") == first
    assert install_suffix(tmp_path / "other") != first
    assert client_id("mine", "d", tmp_path / "state") == "mine"
    assert client_id("", "d", tmp_path / "state") == f"coral-classifier-d-{first}"


def test_two_daemons_sharing_a_device_config_do_not_flap(tmp_path, broker, daemon_factory):
    replay = tmp_path / "replay"
    write_sequence(replay, ["note_5"], gap=2, frames_per_object=2)

    def config(name: str):
        return write_config(
            tmp_path / f"{name}.toml",
            camera={"type": "replay", "source": str(replay), "fps": 10, "loop": True},
            model={"path": str(DEMO), "backend": "cpu"},
            mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "twin",
                  "status_interval": 0.3},
            state={"dir": str(tmp_path / f"state-{name}")})

    rec = Recorder(broker.port, "coral-classifier/twin/#")
    a = daemon_factory(config("a"))
    b = daemon_factory(config("b"))
    try:
        # both publish status every 0.3 s: 40 statuses is ~6 s together, several times the
        # 1 s reconnect delay in which a taken-over client comes back and takes over in turn
        rec.wait_for(lambda r: len(r.on("/status")) >= 40, 60, "40 statuses from the twins")
        flaps = max(s["reconnects"] for s in rec.json_on("/status"))
        outputs = a.output() + b.output()
        assert "MQTT disconnected" not in outputs, outputs[-2000:]
        assert flaps == 0
        assert a.proc.poll() is None and b.proc.poll() is None
    finally:
        rec.close()
