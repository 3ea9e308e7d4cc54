"""The outbox and the event sender on their own: real SQLite files, real threads, and a
publish function that behaves like paho's (mids from a 16-bit counter that wraps, a
PUBACK that may arrive before publish() returns)."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from device.errors import ConfigError
from device.mqtt.outbox import Outbox
from device.mqtt.sender import EventSender


def fill(box: Outbox, n: int, label: str = "a") -> list[int]:
    return [box.add("t/event", lambda seq: f'{{"seq": {seq}}}'.encode(), label)
            for _ in range(n)]


def scan(box: Outbox) -> tuple[int, int]:
    return box.db.execute(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()


def test_running_totals_match_the_table_through_adds_acks_and_bounds(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", max_events=10, max_bytes=10_000)
    rows = fill(box, 25)
    assert box.depth() == scan(box) and box.depth()[0] == 10
    assert box.dropped == 15
    for r in rows[-5:]:
        box.ack(r)
    box.ack(rows[0])  # already dropped: nothing changes
    assert box.depth() == scan(box) == (5, box.depth()[1])
    box.close()
    again = Outbox(tmp_path / "o.sqlite", max_events=10, max_bytes=10_000)
    assert again.dropped == 15, "dropped survives a restart"
    assert again.depth() == scan(again)


def test_a_corrupt_outbox_is_set_aside_and_a_fresh_one_starts(tmp_path):
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not sqlite at all" * 100)
    box = Outbox(path)
    assert "corrupt" in box.recovered and "set aside" in box.recovered
    aside = list(tmp_path.glob("o.sqlite.corrupt-*"))
    assert aside and aside[0].read_bytes().startswith(b"this is not sqlite")
    assert fill(box, 1) and box.depth()[0] == 1


def test_a_truncated_outbox_keeps_its_readable_counts(tmp_path):
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    fill(box, 3, "note_5")
    fill(box, 400, "note_10")  # enough pages that a cut loses the outbox table's tail
    box.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    box.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    box = Outbox(path)
    assert "corrupt" in box.recovered, box.recovered
    counts = box.counts()
    # whatever could be read is carried over; nothing invented
    assert set(counts) <= {"note_5", "note_10"}
    assert all(counts[k] <= {"note_5": 3, "note_10": 400}[k] for k in counts)
    assert fill(box, 1)


def test_an_unwritable_outbox_names_the_problem(tmp_path, monkeypatch):
    """A read-only database (what a root-owned file is to the service user) fails at open,
    not at the first event. Tests run as root, whom file modes do not stop, so SQLite is
    made to open the file read-only (mode=ro): the same "attempt to write a readonly
    database" the service user gets."""
    path = tmp_path / "o.sqlite"
    Outbox(path).close()
    original = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda p, *a, **k: original(
        f"file:{p}?mode=ro", *a, uri=True, **k))
    with pytest.raises(ConfigError, match=r"cannot be written.*owner and mode"):
        Outbox(path)


def test_a_failed_add_stores_nothing_and_shows_the_real_error(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    fill(box, 2)

    def boom(seq: int) -> bytes:
        raise sqlite3.OperationalError("database or disk is full")

    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        box.add("t", boom, "a")
    assert box.depth() == scan(box) == (2, box.depth()[1])
    assert box.counts() == {"a": 2}
    assert fill(box, 1) and box.db.execute(
        "SELECT value FROM meta WHERE key = 'event_seq'").fetchone()[0] == "3"


class PahoLikePublish:
    """paho's publish as the sender sees it: a wrapping 16-bit mid; optionally the PUBACK
    is delivered (on another thread) before publish() returns, as paho's network thread
    can do."""

    def __init__(self, start_mid: int = 0, ack_before_return: bool = False):
        self.mid = start_mid
        self.sent: list[tuple[int, bytes]] = []
        self.ack_before_return = ack_before_return
        self.sender: EventSender | None = None

    def __call__(self, topic: str, payload: bytes) -> tuple[bool, int]:
        self.mid = self.mid % 65535 + 1
        self.sent.append((self.mid, payload))
        if self.ack_before_return:
            t = threading.Thread(target=self.sender.on_puback, args=(self.mid,))
            t.start()
            t.join()
        return True, self.mid


def make_sender(tmp_path, publish) -> tuple[Outbox, EventSender]:
    box = Outbox(tmp_path / "o.sqlite")
    connected = threading.Event()
    connected.set()
    sender = EventSender(box, publish, connected)
    publish.sender = sender
    return box, sender


def test_pubacks_of_other_messages_are_never_kept_and_never_match_an_event(tmp_path):
    """The old sender kept every unknown PUBACK mid forever; once the 16-bit counter
    wrapped, an event was deleted on a stale one before the broker had it."""
    publish = PahoLikePublish(start_mid=0)
    box, sender = make_sender(tmp_path, publish)
    for mid in range(1, 65536):  # status, counts, replies, QoS 0 results on one connection
        sender.on_puback(mid)
    assert not sender._early
    fill(box, 1)
    sender._drain()
    assert len(publish.sent) == 1
    assert box.depth()[0] == 1, "the event waits for its own PUBACK"
    sender.on_puback(publish.sent[0][0])
    assert box.depth()[0] == 0


def test_a_puback_that_beats_publish_returning_still_acks_its_event(tmp_path):
    publish = PahoLikePublish(ack_before_return=True)
    box, sender = make_sender(tmp_path, publish)
    fill(box, 5)
    sender._drain()
    assert len(publish.sent) == 5
    assert box.depth()[0] == 0 and not sender.inflight and not sender._early


def test_reconnect_resends_unacknowledged_events_in_order(tmp_path):
    publish = PahoLikePublish()
    box, sender = make_sender(tmp_path, publish)
    fill(box, 3)
    sender._drain()
    sender.on_puback(publish.sent[0][0])
    sender.reconnected()
    sender._drain()
    resent = [p for _, p in publish.sent[3:]]
    assert resent == [b'{"seq": 2}', b'{"seq": 3}']


def test_the_workers_wire_format_round_trips():
    """The hot path's packed answer carries the raw output and every extra output intact."""
    import numpy as np

    from device.daemon.wire import decode_out, encode_out
    from device.inference import Inference, Postprocess

    raw = np.array([[3, 250, 0, 7]], np.uint8)
    extra = (np.array([0.25, -1.5, 3.0, 0.0], np.float32),)
    inf = Inference(raw, 0.5, 2.25, Postprocess(("a", "b", "c", "d"), 1 / 255, 0, 3, 0.0),
                    extra)
    kind, ticket, pre, ms, raw2, extra2 = decode_out(encode_out(42, inf))
    assert (kind, ticket, pre, ms) == ("out", 42, 0.5, 2.25)
    assert raw2.dtype == np.uint8 and raw2.tolist() == [3, 250, 0, 7]
    assert len(extra2) == 1 and extra2[0].tolist() == [0.25, -1.5, 3.0, 0.0]
