"""Where classified frames go: a result stream (one message per frame, rate-limited) or
events (one decision per object, stored in the outbox before anything is sent).

Both run on the results thread. The event sink never loses a decided event silently: when
the outbox cannot be written (disk full, read-only, I/O error) the event stays in memory
in order, is retried every second, counted and shown in status; if that lasts longer than
`state.max_unstored` the daemon exits so systemd restarts it. Held events are also written
to a reserved spill file (device/daemon/spill.py) so no kind of stop loses them.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from device import messages
from device.config import Config
from device.daemon.presence import EMPTY, Presence
from device.daemon.stats import Stats
from device.daemon.worker import ModelSpec
from device.decision import Decider, Event, Voting
from device.inference import Classification
from device.mqtt.outbox import Outbox
from device.mqtt.publisher import Publisher
from device.mqtt.sender import EventSender
from device.mqtt.topics import Topics
from device.openset import Verdict
from device.policy import DecisionEngine

log = logging.getLogger(__name__)


class Sink(Protocol):
    def handle(self, frame, c: Classification, spec: ModelSpec, verdict: Verdict) -> None: ...

    def tick(self) -> None: ...


class StreamSink:
    """A result message per frame, at most `max_rate` a second."""

    def __init__(self, publisher: Publisher, topics: Topics, qos: int, max_rate: float,
                 stats: Stats, presence: Presence | None = None):
        self.publisher, self.topic, self.qos, self.stats = publisher, topics.result, qos, stats
        self.presence = presence
        self.min_gap = 1.0 / max_rate if max_rate else 0.0
        self.last = 0.0

    def handle(self, frame, c: Classification, spec: ModelSpec, verdict: Verdict) -> None:
        now = time.perf_counter()
        if self.presence is not None:
            self.presence.from_verdict(frame.roi, verdict, frame.ts)
        if self.min_gap and now - self.last < self.min_gap:
            return
        total = frame.capture_ms + (now - frame.t_captured) * 1e3
        result = messages.Result(frame.seq, frame.ts, c, frame.capture_ms, total,
                                  frame.prepare_ms)
        self.publisher.publish(self.topic, messages.result_message(
            result, spec.info(), spec.backend, verdict, frame.roi), qos=self.qos)
        self.stats.published_one()
        self.last = now

    def tick(self) -> None:
        pass


@dataclass(frozen=True)
class _Unstored:
    event: Event
    model: dict[str, str]
    since: float
    roi: str = ""

    @property
    def count_key(self) -> str:
        """Counts are kept per region: '<roi>/<key>' (just the key without regions)."""
        key = self.event.count_key
        return f"{self.roi}/{key}" if self.roi else key


class EventSink:
    """Decider → outbox (event + count in one transaction) → sender, in order."""

    def __init__(self, engine: DecisionEngine, voting: Voting, outbox: Outbox,
                 sender: EventSender, publish_counts: Callable[[], None], topics: Topics,
                 device_id: str, stats: Stats, max_unstored: float = 60.0,
                 presence: Presence | None = None):
        self.engine, self.voting = engine, voting  # one decider per region ('' = frame)
        self.on_event: list[Callable[[Event], None]] = []  # the web page, doubtful frames
        self.deciders: dict[str, Decider] = {}
        self.outbox, self.sender = outbox, sender
        self.presence = presence
        self.publish_counts = publish_counts
        self.topic = topics["event"]
        self.device_id = device_id
        self.stats = stats
        self.max_unstored = max_unstored
        self.unstored: deque[_Unstored] = deque()
        self.failing = ""
        self.fatal = ""  # set when storing failed for too long: the daemon exits
        self._next_retry = 0.0
        self.spill = None  # device.daemon.spill.Spill: held events survive any stop

    def handle(self, frame, c: Classification, spec: ModelSpec, verdict: Verdict) -> None:
        unknown_events = self.engine.policy(spec, frame.roi).unknown_events
        decider = self.deciders.get(frame.roi)
        if decider is None or decider.voting.unknown_events != unknown_events:
            decider = self.deciders[frame.roi] = Decider(
                dataclasses.replace(self.voting, unknown_events=unknown_events))
        was_latched = decider.latched
        event = decider.update(verdict, frame.ts)
        if self.presence is not None:
            if event is not None:
                self.presence.set(frame.roi, event.label, frame.ts)
            elif was_latched and not decider.latched:
                self.presence.set(frame.roi, EMPTY, frame.ts)
        if event is not None:
            worth = spec.denominations.get(event.label) if event.verdict != "unknown" else None
            if worth is not None:
                event = dataclasses.replace(event, value=worth[0], currency=worth[1])
            # stamped with the model that produced the frames, even across a reload
            self.unstored.append(_Unstored(event, spec.info(), time.monotonic(), frame.roi))
            self.stats.event(event.last_ts)
            self.flush()
            for listener in self.on_event:
                listener(event)

    def tick(self) -> None:
        if self.unstored and time.monotonic() >= self._next_retry:
            self.flush()

    def flush(self) -> None:
        """Store what waits, oldest first; stop at the first failure (order matters)."""
        stored = 0
        while self.unstored:
            item = self.unstored[0]
            try:
                self.outbox.add(self.topic, self._payload(item), item.count_key)
            except sqlite3.Error as exc:
                self._failed(exc)
                break
            self.unstored.popleft()
            stored += 1
        if stored:
            if not self.unstored and self.spill is not None:
                self.spill.clear()
            if not self.unstored and self.failing:
                log.warning("outbox writable again: %d held event(s) stored", stored)
                self.stats.clear_error(self.failing)
                self.failing = ""
            self.sender.notify()
            self.publish_counts()

    def _payload(self, item: _Unstored) -> Callable[[int], bytes]:
        def payload(seq: int) -> bytes:
            return messages.dumps(messages.event_payload(item.event, item.model,
                                                         self.device_id, seq, item.roi))
        return payload

    def _failed(self, exc: sqlite3.Error) -> None:
        self._next_retry = time.monotonic() + 1.0
        if self.spill is not None:
            self.spill.hold(self.unstored, self.topic)
        waited = time.monotonic() - self.unstored[0].since
        self.failing = (f"outbox cannot store events ({exc}): {len(self.unstored)} held in "
                        f"memory for {waited:.0f} s, retrying; free disk space or fix "
                        f"{self.outbox.path.parent}")
        self.stats.error("outbox", self.failing, logging.ERROR)
        if waited >= self.max_unstored and not self.fatal:
            self.fatal = (f"outbox unwritable for {waited:.0f} s (state.max_unstored): "
                          "exiting so systemd restarts the daemon")
            log.critical("%s", self.fatal)


def make_sink(cfg: Config, engine: DecisionEngine, outbox: Outbox, sender: EventSender,
              publisher: Publisher, topics: Topics, publish_counts: Callable[[], None],
              stats: Stats, presence: Presence | None = None) -> Sink:
    """The daemon's sink for `decision.mode`: events (a decider per region counting the
    judge's verdicts) or a result stream."""
    dec = cfg.decision
    if dec.mode == "event":
        return EventSink(engine, Voting(dec.min_frames, dec.window, dec.empty_frames),
                         outbox, sender, publish_counts, topics, topics.device_id, stats,
                         cfg.state.max_unstored, presence)
    return StreamSink(publisher, topics, cfg.mqtt.qos, cfg.mqtt.result_max_rate,
                      stats, presence)
