"""The outbox's disk fails under a running daemon: a full file system, and corrupt or
truncated outbox files at start. Real daemon, real mosquitto; the full disk is a real
16 MiB tmpfs mounted in the daemon's own mount namespace (`unshare -m`), filled from
outside through /proc/<pid>/root."""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pytest

from device.tools.synthetic import write_sequence

from .conftest import PYTHON, ROOT, Recorder, write_config

DEMO = ROOT / "compiled_models" / "demo-notes"
PASSES = ["note_5", "note_10", "note_20"] * 4


def can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                       capture_output=True)
    return r.returncode == 0


def event_config(tmp_path: Path, port: int, device_id: str, **state) -> Path:
    replay = tmp_path / "replay"
    if not replay.exists():
        write_sequence(replay, PASSES, gap=4, frames_per_object=5, seed=5)
    return write_config(
        tmp_path / f"{device_id}.toml",
        camera={"type": "replay", "source": str(replay), "fps": 40, "loop": True},
        model={"path": str(DEMO), "backend": "cpu"},
        mqtt={"host": "127.0.0.1", "port": port, "device_id": device_id,
              "status_interval": 0.3},
        decision={"mode": "event", "background_labels": ["empty"], "threshold": 0.6},
        state={"dir": str(tmp_path / "state"), **state})


def fill_up(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: close() has nothing to flush
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs mount namespaces (unshare -m) to "
                    "mount a small tmpfs; run as root or with CAP_SYS_ADMIN")
def test_full_disk_holds_events_in_memory_and_loses_none(tmp_path, broker):
    state = tmp_path / "state"
    state.mkdir()
    cfg = event_config(tmp_path, broker.port, "disk-1")
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen(
        ["unshare", "-m", "sh", "-c",
         f"mount -t tmpfs -o size=16m tmpfs '{state}' && exec '{PYTHON}' -m device run "
         f"--config '{cfg}'"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    rec = Recorder(broker.port, "coral-classifier/disk-1/#")
    inside = Path(f"/proc/{proc.pid}/root") / str(state).lstrip("/")
    try:
        rec.wait_for(lambda r: len(r.json_on("/event")) >= 3, 60, "events before")
        filler = fill_up(inside)
        rec.wait_for(lambda r: any(s["outbox"]["unstored"] > 0 for s in r.json_on("/status")),
                     30, "events held in memory while the disk is full")
        held = [s for s in rec.json_on("/status") if s["outbox"]["unstored"] > 0][-1]
        assert held["errors"]["outbox"] >= 1
        assert "cannot store events" in held["last_error"]
        assert "free disk space" in held["outbox"]["warning"]
        filler.unlink()
        rec.wait_for(lambda r: r.json_on("/status")[-1]["outbox"]["unstored"] == 0
                     and r.json_on("/status")[-1]["events"] >= held["events"] + 3, 60,
                     "the held events stored and more decided")
        final = rec.json_on("/status")[-1]
        rec.wait_for(lambda r: len({e["event_id"] for e in r.json_on("/event")})
                     >= final["events"], 30, "every decided event on the broker")
        seqs = sorted({e["seq"] for e in rec.json_on("/event")})
        assert seqs == list(range(1, len(seqs) + 1)), "gap-free: nothing lost or skipped"
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(20)
        rec.close()
        log.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_outbox_at_start_is_set_aside_and_reported(tmp_path, broker, daemon_factory,
                                                           damage):
    device_id = f"disk-{damage}"
    cfg = event_config(tmp_path, broker.port, device_id)
    state = tmp_path / "state"
    state.mkdir()
    path = state / f"outbox-{device_id}.sqlite"
    if damage == "garbage":
        path.write_bytes(b"\x13\x37 not a database " * 500)
    else:
        import sqlite3

        db = sqlite3.connect(path)
        db.executescript("CREATE TABLE outbox (id INTEGER PRIMARY KEY, topic TEXT, "
                         "payload BLOB, created REAL);")
        db.executemany("INSERT INTO outbox(topic, payload, created) VALUES ('t', ?, 0)",
                       [(b"x" * 500,) for _ in range(200)])
        db.commit()
        db.close()
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    rec = Recorder(broker.port, f"coral-classifier/{device_id}/#")
    d = daemon_factory(cfg)
    try:
        rec.wait_for(lambda r: r.json_on("/event"), 60, "events from a fresh outbox")
        status = rec.json_on("/status")[-1]
        assert "corrupt" in status["outbox"]["warning"], status
        assert list(state.glob(f"outbox-{device_id}.sqlite.corrupt-*"))
        assert d.proc.poll() is None, d.output()
    finally:
        rec.close()
