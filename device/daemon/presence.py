"""What each region shows right now, as a retained MQTT state published only on change:
the class on it, `unknown`, or its background ("empty") - with the time it became so.

Home Assistant's binary_sensor "object present" and its state sensor read this topic. In
event mode the state follows the decider (an event sets the class; the scene going empty
again resets it), so it never flickers with single frames; in stream mode it follows each
frame's verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from device.messages import StatePayload
from device.mqtt.topics import state_topic
from device.openset import Verdict

EMPTY = "empty"


class Presence:
    def __init__(self, publish: Callable[[str, StatePayload], None], base: str,
                 background: tuple[str, ...] = ()):
        self.publish = publish
        self.base = base
        self.background = background
        self.states: dict[str, tuple[str, float]] = {}

    def set(self, roi: str, state: str, ts: float | None = None) -> None:
        """Publish the region's state if it changed (retained)."""
        if self.states.get(roi, ("", 0.0))[0] == state:
            return
        since = round(ts if ts is not None else time.time(), 3)
        self.states[roi] = (state, since)
        self.publish(state_topic(self.base, roi), _payload(state, since, roi))

    def from_verdict(self, roi: str, verdict: Verdict, ts: float) -> None:
        """Stream mode: the frame's verdict."""
        if verdict.reason == "background":
            self.set(roi, EMPTY, ts)
        elif verdict.accepted:
            self.set(roi, verdict.label, ts)
        else:
            self.set(roi, "unknown", ts)

    def republish(self) -> None:
        """After a reconnect with a clean session: the retained states again."""
        for roi, (state, since) in list(self.states.items()):
            self.publish(state_topic(self.base, roi), _payload(state, since, roi))


def _payload(state: str, since: float, roi: str) -> StatePayload:
    return StatePayload(state=state, present=state != EMPTY, since=since, roi=roi)
