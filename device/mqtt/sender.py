"""Publishes the outbox in order at QoS 1 and deletes each event on its PUBACK.

One thread owns event publishing, so the broker sees events in the order they happened,
including a backlog replayed after a reconnect or a restart. A replay may re-deliver an
event whose PUBACK was lost: consumers dedupe by `event_id`.
"""

from __future__ import annotations

import logging
import threading

from device.mqtt.outbox import Outbox

log = logging.getLogger(__name__)


class EventSender(threading.Thread):
    def __init__(self, outbox: Outbox, client, connected: threading.Event,
                 max_inflight: int = 100):
        super().__init__(name="event-sender", daemon=True)
        self.outbox = outbox
        self.client = client
        self.connected = connected
        self.max_inflight = max_inflight
        self.wake = threading.Event()
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.inflight: dict[int, int] = {}  # paho mid -> outbox row id
        self.early: set[int] = set()  # PUBACKs that beat publish() returning their mid
        self.last_sent = 0
        self.sent = 0
        self.generation = 0  # bumped on reconnect: a batch in progress must not move last_sent

    def notify(self) -> None:
        self.wake.set()

    def reconnected(self) -> None:
        """Everything unacknowledged goes out again, in order."""
        with self.lock:
            self.last_sent = 0
            self.generation += 1
            self.inflight.clear()
            self.early.clear()
        self.wake.set()

    def on_puback(self, mid: int) -> None:
        """paho's on_publish (network thread): the broker has the event; forget it."""
        with self.lock:
            row = self.inflight.pop(mid, None)
            if row is None:
                self.early.add(mid)
                return
        self.outbox.ack(row)

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.wake.wait(1.0)
            self.wake.clear()
            try:
                self._drain()
            except Exception:  # the sender must outlive a bad moment; rows stay stored
                log.exception("event sender failed; will retry")

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
                if not self.connected.is_set():
                    return
                info = self.client.publish(topic, payload, qos=1)
                if info.rc != 0:
                    return  # not connected after all: the reconnect replays
                acked = False
                with self.lock:
                    if generation != self.generation:
                        return  # reconnected meanwhile: start again from the oldest
                    if info.mid in self.early:
                        self.early.discard(info.mid)
                        acked = True
                    else:
                        self.inflight[info.mid] = row_id
                    self.last_sent = row_id
                    self.sent += 1
                if acked:
                    self.outbox.ack(row_id)

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()
