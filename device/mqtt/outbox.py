"""The on-disk outbox: every event is stored before it is published and deleted only after
the broker's PUBACK, so a broker outage, a network cut or a SIGKILL loses nothing.

SQLite in WAL mode with synchronous=FULL: an event and its count increment commit in one
transaction that survives a power cut. Bounded by events and bytes; when full the oldest
unsent events are dropped (the per-class counts keep them) and `status` warns well before.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from device.errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counts (label TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Outbox:
    def __init__(self, path: str | Path, max_events: int = 100_000, max_bytes: int = 50 << 20):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # paho's network thread acks; the frame loop adds: one connection, one lock.
            self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"state.outbox {self.path} cannot be opened ({exc}): make its "
                              "folder writable by the daemon") from None
        self.lock = threading.Lock()
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.dropped = 0

    def add(self, topic: str, payload: bytes | Callable[[int], bytes],
            label: str | None = None) -> int:
        """Store an event (and count it) atomically; returns its row id.

        payload may be a function of the event's sequence number: a counter kept in the
        same transaction, so every stored event has a unique, gap-free `seq` that
        survives restarts (consumers can prove nothing is missing).
        """
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                row = self.db.execute("SELECT value FROM meta WHERE key = 'event_seq'").fetchone()
                seq = int(row[0]) + 1 if row else 1
                self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('event_seq', ?)",
                                (str(seq),))
                if callable(payload):
                    payload = payload(seq)
                cur = self.db.execute(
                    "INSERT INTO outbox(topic, payload, created) VALUES (?, ?, ?)",
                    (topic, payload, time.time()))
                if label is not None:
                    self.db.execute("INSERT INTO counts(label, n) VALUES (?, 1) "
                                    "ON CONFLICT(label) DO UPDATE SET n = n + 1", (label,))
                self._enforce_bounds()
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            return int(cur.lastrowid)

    def _enforce_bounds(self) -> None:
        n, size = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        while n > self.max_events or size > self.max_bytes:
            row = self.db.execute(
                "SELECT id, LENGTH(payload) FROM outbox ORDER BY id LIMIT 1").fetchone()
            if row is None:
                break
            self.db.execute("DELETE FROM outbox WHERE id = ?", (row[0],))
            self.dropped += 1
            n, size = n - 1, size - row[1]

    def pending(self, after: int = 0, limit: int = 1000) -> list[tuple[int, str, bytes]]:
        with self.lock:
            return self.db.execute(
                "SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit)).fetchall()

    def ack(self, row_id: int) -> None:
        with self.lock:
            self.db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))

    def depth(self) -> tuple[int, int]:
        """(events, bytes) waiting."""
        with self.lock:
            n, size = self.db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        return int(n), int(size)

    def fill(self, depth: tuple[int, int] | None = None) -> float:
        """Fraction of the bound in use; pass depth() when you already have it."""
        n, size = depth if depth is not None else self.depth()
        return max(n / self.max_events, size / self.max_bytes)

    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.db.execute("SELECT label, n FROM counts ORDER BY label").fetchall())

    def reset_counts(self) -> None:
        with self.lock:
            self.db.execute("DELETE FROM counts")
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('counts_since', ?)",
                            (str(time.time()),))

    def counts_since(self) -> float:
        with self.lock:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'counts_since'").fetchone()
        return float(row[0]) if row else 0.0

    def close(self) -> None:
        with self.lock:
            self.db.close()
