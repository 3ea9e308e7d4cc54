"""The retained `counts` topic, kept equal to the outbox's counts.

Reads and resets are paired with their publish under one lock: a reset racing an event on
the results thread could otherwise publish stale counts after the reset, leaving the
retained topic different from the store.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from device.daemon.status import split_counts
from device.messages import CountsPayload, ReplyPayload
from device.mqtt.outbox import Outbox
from device.mqtt.publisher import Publisher


class CountsTopic:
    def __init__(self, outbox: Outbox, publisher: Publisher, topic: str, rois: set[str]):
        self.outbox, self.publisher, self.topic, self.rois = outbox, publisher, topic, rois
        self.lock = threading.Lock()

    def publish(self) -> None:
        with self.lock:
            self._publish(*self.outbox.counts_snapshot())

    def reset(self) -> dict[str, Any]:
        with self.lock:  # no event's counts can be published between the two
            counts, since = self.outbox.reset_counts()
            self._publish(counts, since)
        return ReplyPayload(ok=True, counts=counts).model_dump(exclude_none=True)

    def _publish(self, counts: dict[str, int], since: float) -> None:
        self.publisher.publish(self.topic, CountsPayload(
            ts=round(time.time(), 3), since=round(since, 3), **split_counts(counts, self.rois)),
            qos=1, retain=True)
