"""`make fleet` / `coral-train fleet` against three real daemons on a real mosquitto:
every device from the retained availability and status, as a table and as JSON."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT, Recorder, run_cli, write_config
from .test_deploy import DEMO

IDS = ("kiosk-1", "kiosk-2", "kiosk-3")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, broker):
    from .conftest import DaemonProcess

    tmp = tmp_path_factory.mktemp("fleet")
    from device.tools.synthetic import write_sequence

    write_sequence(tmp / "replay", ["note_5", "note_10"], gap=2, frames_per_object=4)
    daemons = []
    rec = Recorder(broker.port, "coral-classifier/+/status")
    for i, device_id in enumerate(IDS):
        cfg = write_config(
            tmp / f"{device_id}.toml",
            camera={"type": "replay", "source": str(tmp / "replay"), "fps": 8, "loop": True},
            model={"path": str(DEMO), "backend": "cpu"},
            mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": device_id,
                  "status_interval": 0.5},
            decision={"mode": "event" if i == 0 else "stream", "threshold": 0.5},
            state={"dir": str(tmp / f"state-{device_id}")})
        daemons.append(DaemonProcess(cfg))
    try:
        # The session broker holds other tests' retained statuses: look at ours only.
        rec.wait_for(lambda r: {json.loads(p)["device_id"] for p in r_on(r)
                                if json.loads(p)["state"] == "running"} == set(IDS), 90,
                     "three running daemons")
        rec.wait_for(lambda r: any(json.loads(p)["device_id"] == IDS[0] and
                                   json.loads(p)["last_event_ts"] > 0 for p in r_on(r)),
                     60, "an event on kiosk-1")
    except AssertionError as exc:
        states = [(json.loads(p)["device_id"], json.loads(p)["state"]) for p in r_on(rec)]
        logs = "\n".join(f"--- {i}:\n{d.output()[-3000:]}"
                          for i, d in zip(IDS, daemons, strict=True))
        for d in daemons:
            d.stop()
        raise AssertionError(f"{exc}\nstatus seen: {states[-12:]}\n{logs}") from None
    yield {"daemons": daemons, "port": broker.port, "tmp": tmp}
    rec.close()
    for d in daemons:
        d.stop()


def r_on(rec: Recorder) -> list[bytes]:
    return [p for p in rec.on("/status") if json.loads(p).get("device_id") in IDS]


def test_fleet_table_for_three_daemons(fleet):
    r = subprocess.run(["make", "-s", "-o", ".venv/.installed", "fleet",
                        f"BROKER=127.0.0.1:{fleet['port']}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    Path(os.environ.get("FLEET_OUTPUT", fleet["tmp"] / "make-fleet.txt")).write_text(out)
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["DEVICE", "AVAIL", "STATE", "MODEL"]
    from device.bundle import load_bundle

    sha = load_bundle(DEMO).sha256
    rows = {ln.split()[0]: ln for ln in lines[1:-1]}
    assert set(IDS) <= set(rows), out
    for device_id in IDS:
        row = rows[device_id]
        assert " online " in row and " running " in row and sha[:12] in row and " cpu " in row
    assert "ago" in rows[IDS[0]]  # kiosk-1 decides events: its last event time shows
    assert lines[-1].startswith(f"{len(rows)} device(s)")


def test_fleet_json_and_a_stopped_device(fleet):
    fleet["daemons"][2].stop()
    r = run_cli("fleet", "--broker", f"127.0.0.1:{fleet['port']}", "--json", timeout=60,
                module="host_training")
    assert r.returncode == 0, r.stderr
    got = {d["id"]: d for d in json.loads(r.stdout)}
    assert got[IDS[0]]["availability"] == "online" and got[IDS[0]]["fps"] > 0
    assert got[IDS[0]]["last_event"] > 0
    assert got[IDS[2]]["availability"] == "stopped" and got[IDS[2]]["state"] == "stopped"
    assert got[IDS[1]]["sha256"] == got[IDS[0]]["sha256"]
    assert set(got[IDS[1]]["error_counts"]) >= {"camera", "inference"}


def test_fleet_says_when_the_broker_is_unreachable():
    from device.tools.demo import free_port

    r = run_cli("fleet", "--broker", f"127.0.0.1:{free_port()}", timeout=60,
                module="host_training")
    assert r.returncode != 0 and "cannot reach the broker" in r.stderr
