"""`make rollout`: a pull update for a fleet, canary first, served over HTTP from this
machine (loopback here), against real daemons on a real mosquitto."""

import json
import shutil
import subprocess

import pytest

from .conftest import ROOT, DaemonProcess, Recorder, write_config
from .test_deploy import DEMO, variant


@pytest.fixture(scope="module")
def devices(tmp_path_factory, broker):
    from device.tools.synthetic import write_sequence
    from host_training.fleet.keys import make_keys
    from host_training.fleet.serve import public_key_b64

    tmp = tmp_path_factory.mktemp("rollout")
    key, _ = make_keys(tmp / "keys")  # devices require signed updates (issue 22)
    write_sequence(tmp / "replay", ["note_5", "note_10"], gap=2, frames_per_object=3)
    out, daemons = {}, []
    rec = Recorder(broker.port, "coral-classifier/+/status")
    # ro-strict only takes https (the default): the rollout's http URL is refused there
    for device_id, schemes in (("ro-strict", ["https"]), ("ro-a", ["http"]),
                               ("ro-b", ["http"])):
        models = tmp / device_id / "models"
        models.mkdir(parents=True)
        shutil.copytree(DEMO, models / "v0")
        (models / "current").symlink_to("v0")
        cfg = write_config(
            tmp / f"{device_id}.toml",
            camera={"type": "replay", "source": str(tmp / "replay"), "fps": 10, "loop": True},
            model={"path": str(models / "current"), "backend": "cpu"},
            mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": device_id,
                  "status_interval": 0.5},
            update={"allowed_schemes": schemes, "public_key": public_key_b64(key)},
            state={"dir": str(tmp / device_id)})
        daemons.append(DaemonProcess(cfg))
        out[device_id] = models
    rec.wait_for(lambda r: {json.loads(p)["device_id"] for p in r.on("/status")
                            if json.loads(p)["state"] == "running"} >= set(out), 90,
                 "three running daemons")
    yield {"models": out, "rec": rec, "port": broker.port, "tmp": tmp, "key": key}
    rec.close()
    for d in daemons:
        d.stop()


def served(devices, device_id):
    return [json.loads(p) for p in devices["rec"].on("/status")
            if json.loads(p)["device_id"] == device_id][-1]["model"]["sha256"]


def rollout(devices, model, ids, health=2):
    return subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "rollout", f"MODEL={model}",
         f"DEVICES={' '.join(ids)}", f"BROKER=127.0.0.1:{devices['port']}", "ALLOW_CPU=1",
         f"SIGN_KEY={devices['key']}",
         f"ROLLOUT_ARGS=--serve-address 127.0.0.1 --health {health} --timeout 60"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_rollout_stops_at_a_failing_canary(devices):
    new = variant(DEMO, devices["tmp"] / "n1", "8.0.0", b"8")
    before = served(devices, "ro-a")
    r = rollout(devices, new, ["ro-strict", "ro-a"])
    assert r.returncode != 0 and "Error 6" in r.stderr, r.stderr[-2000:]  # make's status 2
    assert "canary ro-strict" in r.stderr and "not allowed" in r.stderr
    assert "the devices after it were not touched" in r.stderr
    assert served(devices, "ro-a") == before
    for m in devices["models"].values():
        assert (m / "current").readlink().name == "v0"


def test_rollout_canary_first_then_the_rest(devices):
    from device.bundle import load_bundle

    new = variant(DEMO, devices["tmp"] / "n2", "8.1.0", b"9")
    sha = load_bundle(new).sha256
    r = rollout(devices, new, ["ro-a", "ro-b"])
    assert r.returncode == 0, r.stderr[-3000:]
    log = r.stderr
    assert log.index("canary ro-a: serving 8.1.0 and healthy") < \
        log.index("device ro-b: updating to 8.1.0")
    for device_id in ("ro-a", "ro-b"):
        devices["rec"].wait_for(lambda rr, d=device_id: served(devices, d) == sha, 10)
        assert (devices["models"][device_id] / "previous").readlink().name == "v0"
    assert served(devices, "ro-strict") != sha


def test_an_unhealthy_device_is_rolled_back_and_the_rollout_stops(devices):
    """ro-a confirms the update but classifies nothing while watched (paused here): the
    rollout sends it back to its previous model and does not touch ro-b."""
    import paho.mqtt.client as mqtt

    from device.bundle import load_bundle

    before_a, before_b = served(devices, "ro-a"), served(devices, "ro-b")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", devices["port"])
    c.loop_start()
    c.publish("coral-classifier/ro-a/cmd/pause", "{}", qos=1).wait_for_publish(5)
    try:
        new = variant(DEMO, devices["tmp"] / "n3", "8.2.0", b"!")
        r = rollout(devices, new, ["ro-a", "ro-b"], health=3)
        assert r.returncode != 0 and "Error 6" in r.stderr, r.stderr[-2000:]
        assert "no frames classified while watching" in r.stderr
        assert "rolled back to its previous model" in r.stderr
        devices["rec"].wait_for(lambda rr: served(devices, "ro-a") == before_a, 10)
        sha = load_bundle(new).sha256
        assert (devices["models"]["ro-a"] / "previous").readlink().name.endswith(sha[:12])
        assert served(devices, "ro-b") == before_b
    finally:
        c.publish("coral-classifier/ro-a/cmd/resume", "{}", qos=1).wait_for_publish(5)
        c.loop_stop()
        c.disconnect()
