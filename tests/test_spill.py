"""Events decided while the outbox's disk is full are not lost by any kind of stop: a clean
SIGTERM, the designed `state.max_unstored` exit and a SIGKILL. They wait in a spill file
reserved at start and reach the broker after the restart, with the seq they would have
had; what does not fit is published as lost (status outbox.lost / lost_seq, a gap in seq).

Real daemons, real mosquitto; the state folder is a 16 MiB tmpfs mounted in a private
mount namespace held open by a `sleep`, so it outlives the daemon; daemons enter it with
`nsenter` and the test fills and frees it through /proc/<pid>/root."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from device.tools.synthetic import write_sequence

from .conftest import PYTHON, ROOT, Recorder, write_config
from .test_disk import can_mount_tmpfs, fill_up

DEMO = ROOT / "compiled_models" / "demo-notes"
PASSES = ["note_5", "note_10", "note_20"] * 4

needs_tmpfs = pytest.mark.skipif(not can_mount_tmpfs(), reason="needs mount namespaces "
                                 "(unshare -m) to mount a small tmpfs; run as root")


class Namespace:
    """A small tmpfs at `folder`, in a mount namespace of its own that outlives daemons."""

    def __init__(self, folder: Path, size: str = "16m"):
        folder.mkdir()
        self.holder = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             f"mount -t tmpfs -o size={size} tmpfs '{folder}' && echo mounted && exec sleep 900"],
            stdout=subprocess.PIPE, text=True)
        assert self.holder.stdout.readline().strip() == "mounted"
        self.inside = Path(f"/proc/{self.holder.pid}/root") / str(folder).lstrip("/")

    def start(self, cfg: Path, log) -> subprocess.Popen:
        return subprocess.Popen(["nsenter", "-t", str(self.holder.pid), "-m", "--", PYTHON,
                                 "-m", "device", "run", "--config", str(cfg)],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait(10)


def config(tmp_path: Path, port: int, device_id: str, name: str, passes: list[str],
           **state) -> Path:
    replay = tmp_path / f"replay-{name}"
    write_sequence(replay, passes, gap=4, frames_per_object=5, seed=5)
    return write_config(
        tmp_path / f"{device_id}-{name}.toml",
        camera={"type": "replay", "source": str(replay), "fps": 40, "loop": True},
        model={"path": str(DEMO), "backend": "cpu"},
        mqtt={"host": "127.0.0.1", "port": port, "device_id": device_id,
              "status_interval": 0.3},
        decision={"mode": "event", "background_labels": ["empty"], "threshold": 0.6},
        state={"dir": str(tmp_path / "state"), **state})


def hold_events_then_stop(ns: Namespace, rec: Recorder, cfg: Path, log, stop: str,
                          held: int) -> int:
    """Run until `held` events wait in memory on a full disk, stop; events decided."""
    proc = ns.start(cfg, log)
    try:
        rec.wait_for(lambda r: len(r.json_on("/event")) >= 2, 60, "events before the fault")
        fill_up(ns.inside)
        rec.wait_for(lambda r: r.json_on("/status")[-1]["outbox"]["unstored"] >= held, 30,
                     f"{held} events held in memory on the full disk")
        if stop == "sigterm":
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        elif stop == "sigkill":
            proc.kill()
            proc.wait(10)
        else:
            assert proc.wait(60) == 1, "state.max_unstored exits for a restart"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    decided = max(s["events"] for s in rec.json_on("/status"))
    (ns.inside / "filler").unlink()
    return decided


@needs_tmpfs
@pytest.mark.parametrize("stop", ["sigterm", "max_unstored", "sigkill"])
def test_events_held_on_a_full_disk_survive_the_stop(tmp_path, broker, stop):
    device_id = f"spill-{stop}"
    ns = Namespace(tmp_path / "state")
    rec = Recorder(broker.port, f"coral-classifier/{device_id}/#")
    log = (tmp_path / "daemon.log").open("w")
    proc = None
    try:
        cfg = config(tmp_path, broker.port, device_id, "busy", PASSES,
                     max_unstored=2.0 if stop == "max_unstored" else 600.0)
        decided = hold_events_then_stop(ns, rec, cfg, log, stop, held=3)
        # the restart sees no objects: every event after it comes from the spill file
        before = len(rec.json_on("/status"))  # what follows is the restarted daemon's
        proc = ns.start(config(tmp_path, broker.port, device_id, "quiet", []), log)
        rec.wait_for(lambda r: len({e["event_id"] for e in r.json_on("/event")}) >= decided,
                     60, f"all {decided} events decided before the {stop} on the broker")
        events = {e["event_id"]: e["seq"] for e in rec.json_on("/event")}
        assert sorted(events.values()) == list(range(1, len(events) + 1)), "no gap, no dup"
        status = rec.wait_for(lambda r: next((
            s for s in r.json_on("/status")[before:] if s["state"] == "running"
            and "restored from spill-" in (s["outbox"]["warning"] or "")), None), 60,
            "the restarted daemon saying it restored the spill file")
        assert status["outbox"]["lost"] == 0 and status["outbox"]["lost_seq"] is None
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        ns.close()
        rec.close()
        log.close()


@needs_tmpfs
def test_events_beyond_the_spill_file_are_published_as_lost(tmp_path, broker):
    device_id = "spill-lost"
    ns = Namespace(tmp_path / "state")
    rec = Recorder(broker.port, f"coral-classifier/{device_id}/#")
    log = (tmp_path / "daemon.log").open("w")
    proc = None
    try:
        # room for two events: the rest held on the full disk dies with the SIGKILL
        cfg = config(tmp_path, broker.port, device_id, "busy", PASSES, spill_bytes=1200)
        decided = hold_events_then_stop(ns, rec, cfg, log, "sigkill", held=6)
        proc = ns.start(config(tmp_path, broker.port, device_id, "one", ["note_5"]), log)
        rec.wait_for(lambda r: r.json_on("/status")[-1]["outbox"]["lost"] > 0, 60,
                     "the loss published in status")
        status = rec.json_on("/status")[-1]
        first, last = status["outbox"]["lost_seq"]
        assert status["outbox"]["lost"] == last - first + 1 >= 4
        assert "lost (seq" in status["outbox"]["warning"]
        rec.wait_for(lambda r: max(e["seq"] for e in r.json_on("/event")) > last, 60,
                     "an event after the gap")
        seqs = {e["seq"] for e in rec.json_on("/event")}
        missing = set(range(1, max(seqs) + 1)) - seqs
        assert missing == set(range(first, last + 1)), "the gap is exactly the lost range"
        assert first - 1 + status["outbox"]["lost"] >= decided, "every decided event is " \
            "either on the broker or counted as lost"
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        ns.close()
        rec.close()
        log.close()


# -- the spill file on its own (no daemon): the restore's seq bookkeeping ------------------
MODEL = {"name": "m", "version": "1.0.0", "sha256": "0" * 64}


def held(n: int, start: int = 0):
    from device.daemon.sinks import _Unstored
    from device.decision import Event

    return [_Unstored(Event(f"ev-{i}", "note_5", 0.9, 3, float(i), float(i) + 0.1), MODEL,
                      0.0) for i in range(start, start + n)]


def record_size() -> int:
    """The bytes one held event takes in the spill file (its event payload varies in size
    as the payload model grows)."""
    import json

    from device import messages
    from device.daemon.spill import REC

    it = held(1)[0]
    data = json.dumps({"topic": "t", "key": it.count_key, "payload": messages.event_payload(
        it.event, it.model, "dev", 1, it.roi)}, separators=(",", ":")).encode()
    return REC.size + len(data)


def stored_events(outbox) -> list[tuple[int, str]]:
    import json

    rows = [json.loads(p) for _, _, p in outbox.pending()]
    return [(r["seq"], r["event_id"]) for r in rows if "seq" in r]


def test_restore_skips_what_the_outbox_already_has(tmp_path):
    """A crash between storing held events and clearing the spill file: no duplicates."""
    from device import messages
    from device.daemon.spill import Spill, open_spill
    from device.mqtt.outbox import Outbox

    outbox = Outbox(tmp_path / "outbox.sqlite")
    outbox.add("t", b"{}", "note_5")  # seq 1, stored before the fault
    spill = Spill(tmp_path / "spill.bin", 4096, outbox, "dev")
    items = held(3)
    spill.hold(items, "t")  # the three held events: seq 2, 3, 4 to be
    for it in items[:2]:  # the disk came back: two stored, then the SIGKILL
        outbox.add("t", lambda s, it=it: messages.dumps(messages.event_payload(
            it.event, it.model, "dev", s)), "note_5")
    spill.close()
    again = open_spill(tmp_path / "spill.bin", 4096, outbox, "dev")
    assert [e for e in stored_events(outbox) if e[1].startswith("ev-")] == [
        (2, "ev-0"), (3, "ev-1"), (4, "ev-2")]
    assert outbox.lost == 0 and "1 event(s)" in again.note
    again.close()
    # restored once only: a second start finds an empty spill file
    assert open_spill(tmp_path / "spill.bin", 4096, outbox, "dev").note == ""


def test_what_does_not_fit_becomes_a_recorded_gap(tmp_path):
    from device.daemon.spill import HEADER_SIZE, Spill, open_spill
    from device.mqtt.outbox import Outbox

    outbox = Outbox(tmp_path / "outbox.sqlite")
    size = HEADER_SIZE + 2 * record_size() + 10  # room for two records, not three
    spill = Spill(tmp_path / "spill.bin", size, outbox, "dev")
    spill.hold(held(2), "t")
    spill.hold(held(3, start=2), "t")  # held later, in order: three more fit nowhere
    assert spill.count == 2 and spill.lost == 3
    spill.close()
    again = open_spill(tmp_path / "spill.bin", size, outbox, "dev")
    assert [s for s, _ in stored_events(outbox)] == [1, 2]
    assert outbox.lost == 3 and outbox.lost_seq == (3, 5)
    outbox.add("t", b"{}")
    assert outbox.last_seq() == 6, "the next event comes after the gap"
    outbox.close()
    reopened = Outbox(tmp_path / "outbox.sqlite")
    assert reopened.lost == 3 and reopened.lost_seq == (3, 5), "survives restarts"
    again.close()
