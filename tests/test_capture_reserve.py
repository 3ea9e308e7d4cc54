"""cmd/capture and the doubtful-frame ring stop before the state disk's free-space reserve
(capture.min_free_bytes), never at its last byte: a real daemon on a 16 MiB tmpfs in a
private mount namespace, a real mosquitto."""

from __future__ import annotations

import json
import os
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from device.tools.synthetic import write_sequence

from .conftest import ROOT, Recorder, write_config
from .test_disk import can_mount_tmpfs
from .test_spill import Namespace

DEMO = ROOT / "compiled_models" / "demo-notes"
RESERVE = 4 << 20

pytestmark = pytest.mark.skipif(not can_mount_tmpfs(), reason="needs mount namespaces "
                                "(unshare -m) to mount a small tmpfs; run as root")


def free(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def leave_free(folder: Path, room: int) -> None:
    """Fill the disk until only `room` bytes are free (real pages: tmpfs is not sparse)."""
    with open(folder / "filler", "wb") as f:
        left = free(folder) - room
        while left > 0:
            left -= f.write(b"\0" * min(left, 1 << 20))


@pytest.mark.parametrize("kind", ["capture", "doubtful"])
def test_frames_stop_before_the_free_space_reserve(tmp_path, broker, kind):
    device_id = f"reserve-{kind}"
    replay = tmp_path / "replay"
    write_sequence(replay, ["note_5", "note_10"], gap=2, frames_per_object=6)
    capture = {"min_free_bytes": RESERVE}
    if kind == "doubtful":  # every non-empty frame is doubtful, none rate-limited
        capture.update(keep_doubtful=True, doubtful_interval=0.0, doubtful_margin=1.0)
    cfg = write_config(
        tmp_path / f"{device_id}.toml",
        camera={"type": "replay", "source": str(replay), "fps": 40, "loop": True},
        model={"path": str(DEMO), "backend": "cpu"},
        mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": device_id,
              "status_interval": 0.5},
        state={"dir": str(tmp_path / "state")}, capture=capture)
    ns = Namespace(tmp_path / "state")
    rec = Recorder(broker.port, f"coral-classifier/{device_id}/#")
    log_path = tmp_path / "daemon.log"
    log = log_path.open("w")
    proc = ns.start(cfg, log)
    try:
        rec.wait_for(lambda r: r.on("availability")[-1:] == [b"online"], 30, "online")
        leave_free(ns.inside, RESERVE + (2 << 20))  # room for ~100 frames above the reserve
        if kind == "capture":
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()
            body = json.dumps({"label": "x", "frames": 10000, "every": 0})
            pub.publish(f"coral-classifier/{device_id}/cmd/capture", body,
                        qos=1).wait_for_publish(5)
            rec.wait_for(lambda r: r.json_on("cmd/capture/reply"), 10, "capture reply")
            assert rec.json_on("cmd/capture/reply")[0]["ok"]
        rec.wait_for(lambda r: "capture.min_free_bytes" in log_path.read_text()
                     or free(ns.inside) < RESERVE, 60, "frames stopped by the reserve")
        assert free(ns.inside) >= RESERVE, "the reserve was eaten into"
        saved = list((ns.inside / ("dataset" if kind == "capture" else "doubtful"))
                     .rglob("*.jpg"))
        assert len(saved) >= 10, "frames were saved until the reserve"
        if kind == "capture":  # a new capture is refused while the disk is that low
            pub.publish(f"coral-classifier/{device_id}/cmd/capture", body,
                        qos=1).wait_for_publish(5)
            rec.wait_for(lambda r: len(r.json_on("cmd/capture/reply")) >= 2, 10, "reply 2")
            again = rec.json_on("cmd/capture/reply")[1]
            assert not again["ok"] and "min_free_bytes" in again["error"]
            pub.loop_stop()
            pub.disconnect()
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(20)
        ns.close()
        rec.close()
        log.close()
