"""The second place for decided events the outbox cannot take (disk full, I/O error): a
small file reserved (preallocated) at start in the state folder, so writing into it needs
no new disk blocks when the disk is full.

Every event held in memory is written here the moment its store fails, so a SIGTERM, the
`state.max_unstored` exit or a SIGKILL loses none of them: the next start puts them into
the outbox first, with the `seq` they would have had. Events that no longer fit are
counted in the file's header; the next start skips their `seq` numbers (a gap a
controller sees) and records the loss in the outbox (`lost`, `lost_seq` in status).

Layout: a 64-byte header (magic, base seq, records, end offset, lost, CRC), then records
(length, CRC, JSON). Record i is the event with seq base+1+i: held events are stored in
order, so on restore a record whose seq the outbox already has was stored before the
stop and is skipped (no duplicates after a crash between the outbox and this file).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from device import messages
from device.mqtt.outbox import Outbox

log = logging.getLogger(__name__)

MAGIC = b"CCSPILL1"
HEAD = struct.Struct("<8sQIIQ")  # magic, base seq, records, end offset, lost
HEADER_SIZE = 64
REC = struct.Struct("<II")  # length, crc32


class Spill:
    """The reserved file: `hold` what the outbox refused, `clear` once it took it all."""

    def __init__(self, path: Path, size: int, outbox: Outbox, device_id: str):
        self.path, self.size, self.outbox, self.device_id = path, size, outbox, device_id
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.base, self.records, self.lost = _read(self.fd)
        self.count, self.end = 0, HEADER_SIZE  # what this run has written
        self.held: set[str] = set()  # event ids written (or counted as lost) this run
        self.full = False
        self.broken = ""
        self.note = ""  # what the restore at start found (shown in status)

    def reserve(self) -> None:
        """Allocate the whole file now, while the disk has room."""
        try:
            os.posix_fallocate(self.fd, 0, self.size)
        except OSError as exc:
            log.warning("cannot reserve %d bytes for %s (%s): events held during a disk "
                        "fault may be lost at a stop", self.size, self.path, exc)

    def restore(self) -> str:
        """Put what an earlier run left here into the outbox; record what was lost."""
        records, lost = self.records, self.lost
        if not records and not lost:
            return ""
        last = self.outbox.last_seq()
        restored = 0
        for i, rec in enumerate(records):
            if self.base + 1 + i <= last:
                continue  # stored before that run stopped
            event = rec["payload"]
            self.outbox.add(rec["topic"], lambda seq, e=event: messages.dumps({**e, "seq": seq}),
                            rec["key"])
            restored += 1
        skipped = self.outbox.skip_seq(self.base + len(records) + lost) if lost else None
        self._write_header(0, 0, 0)
        self.records, self.lost = [], 0
        parts = [f"{restored} event(s) held during a disk fault restored from {self.path.name}"]
        if skipped:
            parts.append(f"{skipped[1] - skipped[0] + 1} decided event(s) did not fit and "
                         f"are lost (seq {skipped[0]}-{skipped[1]}; counts miss them): "
                         "raise state.spill_bytes or keep the disk from filling")
        self.note = "; ".join(parts)
        (log.error if skipped else log.warning)("%s", self.note)
        return self.note

    def hold(self, items: Iterable[Any], topic: str) -> None:
        """Write the held events not written yet (EventSink's _Unstored, oldest first)."""
        new = [it for it in items if it.event.event_id not in self.held]
        if not new or self.broken:
            return
        if not self.count and not self.lost:
            try:
                self.base = self.outbox.last_seq()  # the oldest held event gets base + 1
            except sqlite3.Error as exc:
                return self._broke(exc)
        chunks = []
        for it in new:
            self.held.add(it.event.event_id)
            data = json.dumps({"topic": topic, "key": it.count_key, "payload": (
                messages.event_payload(it.event, it.model, self.device_id, 1, it.roi))},
                separators=(",", ":")).encode()
            rec = REC.pack(len(data), zlib.crc32(data)) + data
            if self.full or self.end + sum(map(len, chunks)) + len(rec) > self.size:
                self.full = True  # later ones are lost too: records stay in seq order
                self.lost += 1
            else:
                chunks.append(rec)
        try:
            if chunks:
                os.pwrite(self.fd, b"".join(chunks), self.end)
                self.end += sum(map(len, chunks))
                self.count += len(chunks)
            self._write_header(self.base, self.count, self.lost)
        except OSError as exc:
            self._broke(exc)

    def clear(self) -> None:
        """The outbox took every held event: forget them (one write, only if any)."""
        if self.count or self.lost:
            self.count, self.end, self.lost, self.full = 0, HEADER_SIZE, 0, False
            try:
                self._write_header(0, 0, 0)
            except OSError as exc:
                self._broke(exc)
        self.held.clear()

    def _write_header(self, base: int, count: int, lost: int) -> None:
        head = HEAD.pack(MAGIC, base, count, self.end if count else HEADER_SIZE, lost)
        head += struct.pack("<I", zlib.crc32(head))
        os.pwrite(self.fd, head.ljust(HEADER_SIZE, b"\0"), 0)
        os.fdatasync(self.fd)

    def _broke(self, exc: Exception) -> None:
        self.broken = f"{self.path} cannot be written ({exc})"
        log.error("%s: events held in memory are lost if the daemon stops now", self.broken)

    def close(self) -> None:
        os.close(self.fd)


def _read(fd: int) -> tuple[int, list[dict[str, Any]], int]:
    """(base seq, records, lost) left by an earlier run; a damaged record ends the list and
    the records it hides count as lost (their seq numbers are skipped)."""
    head = os.pread(fd, HEADER_SIZE, 0)
    if len(head) < HEAD.size + 4 or head[:8] != MAGIC:
        return 0, [], 0
    (crc,) = struct.unpack_from("<I", head, HEAD.size)
    if zlib.crc32(head[:HEAD.size]) != crc:
        log.error("spill file header is damaged: what it held is unknown")
        return 0, [], 0
    _, base, count, end, lost = HEAD.unpack_from(head)
    data = os.pread(fd, end - HEADER_SIZE, HEADER_SIZE) if end > HEADER_SIZE else b""
    records: list[dict[str, Any]] = []
    pos = 0
    while len(records) < count and pos + REC.size <= len(data):
        n, c = REC.unpack_from(data, pos)
        body = data[pos + REC.size: pos + REC.size + n]
        if len(body) != n or zlib.crc32(body) != c:
            break
        try:
            records.append(json.loads(body))
        except ValueError:
            break
        pos += REC.size + n
    return base, records, lost + count - len(records)


def open_spill(path: Path, size: int, outbox: Outbox, device_id: str) -> Spill | None:
    """At start: restore what the last run left, then reserve the file (None: size 0, or
    the outbox cannot take the leftovers now: they stay in the file for the next start)."""
    if size <= 0 and not path.exists():
        return None
    spill = Spill(path, size, outbox, device_id)
    try:
        spill.restore()
    except sqlite3.Error as exc:
        log.error("events left in %s cannot be restored into the outbox now (%s): they stay "
                  "there for the next start; free disk space", path, exc)
        spill.close()
        return None
    if size <= 0:
        spill.close()
        path.unlink()
        return None
    spill.reserve()
    return spill
