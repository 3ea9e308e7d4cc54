"""The on-disk outbox: every event is stored before it is published and deleted only after
the broker's PUBACK, so a broker outage, a network cut or a SIGKILL loses nothing.

SQLite in WAL mode with synchronous=FULL: an event and its count increment commit in one
transaction that survives a power cut. Bounded by events and bytes, kept as running
totals (no table scan per event); when full the oldest unsent events are dropped (the
per-class counts keep them, `dropped` is persisted) and `status` warns well before.

Opening probes that the file can really be written (a root-owned or read-only file
fails here, with the right advice, not at the first event). A corrupt file is renamed
aside with the reason, the counts that can still be read are carried over, and a fresh
outbox starts: the device keeps working and `status` says what happened.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from device.errors import ConfigError

log = logging.getLogger(__name__)

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
        self.lock = threading.Lock()
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.recovered = ""  # why a corrupt outbox was set aside (shown in status)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"state folder {self.path.parent} cannot be created ({exc}): "
                              "set state.dir to a folder the daemon may write") from None
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                self._set_aside(str(exc))
            else:
                raise self._unwritable(exc) from None
        except OSError as exc:
            raise self._unwritable(exc) from None

    def _unwritable(self, exc: Exception) -> ConfigError:
        return ConfigError(
            f"state outbox {self.path} cannot be written ({exc}): it must be readable and "
            f"writable by the daemon's user (check the owner and mode of the file and of "
            f"{self.path.parent}, and that the disk is not full or read-only)")

    def _open(self) -> None:
        # paho's network thread acks; the results thread adds: one connection, one lock.
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
            check = self.db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed: {check}")
            # the writability probe: a real write in a real transaction
            self._set_meta("opened", str(time.time()))
            self.n, self.size = (int(v) for v in self.db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone())
            self.dropped = int(self._meta("dropped", "0"))
            self._load_lost()
        except BaseException:
            self.db.close()
            raise

    def _set_aside(self, reason: str) -> None:
        """Rename a corrupt database (and its WAL) aside; keep what counts can be read."""
        counts, meta = _salvage(self.path)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.rename(Path(str(aside) + suffix))
        self._open()
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            for label, n in counts.items():
                self.db.execute("INSERT OR REPLACE INTO counts(label, n) VALUES (?, ?)",
                                (label, n))
            for key, value in meta.items():  # seq stays gap-free from what was readable
                self._set_meta(key, value, tx=False)
            self.db.execute("COMMIT")
        self.dropped = int(meta.get("dropped", "0"))
        self._load_lost()
        lost = "its counts were recovered" if counts else "its counts could not be read"
        self.recovered = (f"outbox was corrupt ({reason}); set aside as {aside.name}, "
                          f"{lost}; unsent events in it are lost")
        log.error("%s", self.recovered)

    def _meta(self, key: str, default: str) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def _set_meta(self, key: str, value: str, tx: bool = True) -> None:
        sql = "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)"
        if not tx:
            self.db.execute(sql, (key, value))
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(sql, (key, value))
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        # a failed COMMIT may already have ended the transaction: a blind ROLLBACK would
        # raise "no transaction is active" and hide the real error
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error as exc:
                log.warning("rollback failed: %s", exc)

    def add(self, topic: str, payload: bytes | Callable[[int], bytes],
            label: str | None = None) -> int:
        """Store an event (and count it) atomically; returns its row id.

        payload may be a function of the event's sequence number: a counter kept in the
        same transaction, so every stored event has a unique, gap-free `seq` that
        survives restarts (consumers can prove nothing is missing). Raises sqlite3.Error
        (disk full, read-only) with nothing stored: the caller keeps the event and retries.
        """
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                seq = int(self._meta("event_seq", "0")) + 1
                self._set_meta("event_seq", str(seq), tx=False)
                data = payload(seq) if callable(payload) else payload
                cur = self.db.execute(
                    "INSERT INTO outbox(topic, payload, created) VALUES (?, ?, ?)",
                    (topic, data, time.time()))
                if label is not None:
                    self.db.execute("INSERT INTO counts(label, n) VALUES (?, 1) "
                                    "ON CONFLICT(label) DO UPDATE SET n = n + 1", (label,))
                n, size, dropped = self._enforce_bounds(self.n + 1, self.size + len(data))
                self.db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self.n, self.size, self.dropped = n, size, dropped
            return int(cur.lastrowid)

    def last_seq(self) -> int:
        """The seq of the last event stored (0: none yet)."""
        with self.lock:
            return int(self._meta("event_seq", "0"))

    def skip_seq(self, last: int) -> tuple[int, int] | None:
        """Events decided but lost (see device/daemon/spill.py): skip their seq numbers up to
        `last`, a gap consumers see, and count them (`lost`, `lost_seq`: survive restarts).
        Returns the skipped (first, last), or None when the outbox is already past `last`."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                first = int(self._meta("event_seq", "0")) + 1
                if last < first:
                    self.db.execute("ROLLBACK")
                    return None
                lost = int(self._meta("lost", "0")) + last - first + 1
                for key, value in (("event_seq", last), ("lost", lost),
                                   ("lost_seq", f"{first}-{last}")):
                    self._set_meta(key, str(value), tx=False)
                self.db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self.lost, self.lost_seq = lost, (first, last)
            return first, last

    def _load_lost(self) -> None:
        self.lost = int(self._meta("lost", "0"))
        first, _, last = self._meta("lost_seq", "").partition("-")
        self.lost_seq = (int(first), int(last)) if last else None

    def _enforce_bounds(self, n: int, size: int) -> tuple[int, int, int]:
        dropped = self.dropped
        while n > self.max_events or size > self.max_bytes:
            row = self.db.execute("DELETE FROM outbox WHERE id = (SELECT MIN(id) FROM outbox) "
                                  "RETURNING LENGTH(payload)").fetchone()
            if row is None:
                break
            dropped += 1
            n, size = n - 1, size - row[0]
        if dropped != self.dropped:
            self._set_meta("dropped", str(dropped), tx=False)
        return n, size, dropped

    def pending(self, after: int = 0, limit: int = 1000) -> list[tuple[int, str, bytes]]:
        with self.lock:
            return self.db.execute(
                "SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit)).fetchall()

    def ack(self, row_id: int) -> None:
        with self.lock:
            row = self.db.execute("DELETE FROM outbox WHERE id = ? RETURNING LENGTH(payload)",
                                  (row_id,)).fetchone()
            if row is not None:
                self.n, self.size = self.n - 1, self.size - row[0]

    def depth(self) -> tuple[int, int]:
        """(events, bytes) waiting: running totals, no table scan."""
        return self.n, self.size

    def fill(self, depth: tuple[int, int] | None = None) -> float:
        """Fraction of the bound in use; pass depth() when you already have it."""
        n, size = depth if depth is not None else self.depth()
        return max(n / self.max_events, size / self.max_bytes)

    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.db.execute("SELECT label, n FROM counts ORDER BY label").fetchall())

    def reset_counts(self) -> tuple[dict[str, int], float]:
        """Zero the counts; returns the (empty) counts and the reset time, read in the same
        transaction so a concurrent event cannot slip between reset and publish."""
        with self.lock:
            now = time.time()
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("DELETE FROM counts")
                self._set_meta("counts_since", str(now), tx=False)
                self.db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            return {}, now

    def counts_snapshot(self) -> tuple[dict[str, int], float]:
        """Counts and their reset time, consistent with each other."""
        with self.lock:
            counts = dict(self.db.execute("SELECT label, n FROM counts ORDER BY label")
                          .fetchall())
            return counts, float(self._meta("counts_since", "0"))

    def counts_since(self) -> float:
        with self.lock:
            return float(self._meta("counts_since", "0"))

    def close(self) -> None:
        with self.lock:
            self.db.close()


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return type(exc) is sqlite3.DatabaseError or "malformed" in text or "not a database" in text


def _salvage(path: Path) -> tuple[dict[str, int], dict[str, str]]:
    """Whatever per-class counts and counters a damaged outbox still yields (read-only)."""
    counts: dict[str, int] = {}
    meta: dict[str, str] = {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return counts, meta
    try:
        counts = {str(k): int(v) for k, v in db.execute("SELECT label, n FROM counts")}
        meta = {str(k): str(v) for k, v in db.execute(
            "SELECT key, value FROM meta WHERE key IN ('counts_since', 'event_seq', 'dropped', "
            "'lost', 'lost_seq')")}
    except (sqlite3.Error, ValueError, TypeError):
        pass
    finally:
        db.close()
    return counts, meta
