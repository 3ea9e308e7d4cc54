"""Publishes the outbox in order at QoS 1 and deletes each event on its own PUBACK.

One thread owns event publishing, so the broker sees events in the order they happened,
including a backlog replayed after a reconnect or a restart. A replay may re-deliver an
event whose PUBACK was lost: consumers dedupe by `event_id`.

A PUBACK deletes a row only when its mid is one this sender registered. paho can report
a PUBACK before `publish()` has returned the mid (the network thread is faster than the
caller), so acknowledgements that arrive *while a publish call is under way* are kept
until that one call has registered its mid, then forgotten. Everything else - the
PUBACKs of status, counts and replies, and QoS-0 completions - is ignored, so nothing is
kept forever and a wrapped 16-bit mid can never match a stale acknowledgement.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from device.mqtt.outbox import Outbox

log = logging.getLogger(__name__)

PublishQos1 = Callable[[str, bytes], tuple[bool, int]]  # -> (accepted, mid)


class EventSender(threading.Thread):
    def __init__(self, outbox: Outbox, publish: PublishQos1, connected: threading.Event,
                 max_inflight: int = 100):
        super().__init__(name="event-sender", daemon=True)
        self.outbox = outbox
        self.publish = publish
        self.connected = connected
        self.max_inflight = max_inflight
        self.wake = threading.Event()
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.inflight: dict[int, int] = {}  # paho mid -> outbox row id
        self._publishing = False  # a publish() call is under way: its PUBACK may come first
        self._early: set[int] = set()  # PUBACKs seen during that call only
        self._undeleted: list[int] = []  # acknowledged rows a failing disk kept: retried
        self.last_sent = 0
        self.sent = 0
        self.acked = 0
        self.generation = 0  # bumped on reconnect: a batch in progress must not move last_sent

    def notify(self) -> None:
        self.wake.set()

    def reconnected(self) -> None:
        """Everything unacknowledged goes out again, in order."""
        with self.lock:
            self.last_sent = 0
            self.generation += 1
            self.inflight.clear()
            self._early.clear()
        self.wake.set()

    def on_puback(self, mid: int) -> None:
        """paho's on_publish (network thread): the broker has the event; forget it."""
        with self.lock:
            row = self.inflight.pop(mid, None)
            if row is None:
                if self._publishing:
                    self._early.add(mid)
                return
        self._ack(row)

    def _ack(self, row: int) -> None:
        try:
            self.outbox.ack(row)
            self.acked += 1
        except Exception as exc:  # disk trouble: delete it once the disk recovers
            log.warning("could not delete acknowledged event %d (retrying): %s", row, exc)
            with self.lock:
                self._undeleted.append(row)
            return
        self.wake.set()

    def _retry_deletes(self) -> None:
        with self.lock:
            rows, self._undeleted = self._undeleted, []
        for row in rows:
            self._ack(row)

    def pending_acks(self) -> int:
        with self.lock:
            return len(self.inflight)

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.wake.wait(1.0)
            self.wake.clear()
            try:
                if self._undeleted:
                    self._retry_deletes()
                self._drain()
            except Exception:  # the sender must outlive a bad moment; rows stay stored
                log.exception("event sender failed; will retry")
                self.stop_event.wait(1.0)

    def _drain(self) -> None:
        while self.connected.is_set() and not self.stop_event.is_set():
            with self.lock:
                after = self.last_sent
                generation = self.generation
                busy = len(self.inflight) >= self.max_inflight
            if busy:
                self.wake.wait(0.05)
                self.wake.clear()
                continue
            rows = self.outbox.pending(after=after, limit=self.max_inflight)
            if not rows:
                return
            for row_id, topic, payload in rows:
                if not self.connected.is_set() or not self._send(row_id, topic, payload,
                                                                 generation):
                    return

    def _send(self, row_id: int, topic: str, payload: bytes, generation: int) -> bool:
        with self.lock:
            self._publishing = True
            self._early.clear()
        try:
            ok, mid = self.publish(topic, payload)
        except BaseException:
            with self.lock:
                self._publishing = False
                self._early.clear()
            raise
        acked = False
        with self.lock:
            # registering and closing the early window is one step under the lock, so a
            # PUBACK finds the mid either in _early or in inflight, never in neither
            self._publishing = False
            early, self._early = self._early, set()
            if not ok:
                return False  # not connected after all: the reconnect replays
            if generation != self.generation:
                return False  # reconnected meanwhile: start again from the oldest
            if mid in early:
                acked = True
            else:
                self.inflight[mid] = row_id
            self.last_sent = row_id
            self.sent += 1
        if acked:
            self._ack(row_id)
        return True

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()
