"""From per-frame classifications to one decision per object (pure, no I/O).

A class becomes an event when it is top-1 with a score >= its threshold in K of the last
N frames; the decider then latches until the scene is empty again (M frames of a
background label, or M frames where no class reaches its threshold), so one note passing
the camera gives exactly one event. With a background class configured, something that
stays non-background but unsure for K of N frames becomes one `unknown` event: a
counterfeit or a foreign object in the slot.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field

from device.processing import Class

UNKNOWN = "unknown"
_BACKGROUND = object()
_UNSURE = object()


@dataclass(frozen=True)
class DecisionRules:
    threshold: float = 0.7
    background_labels: tuple[str, ...] = ()
    min_frames: int = 3  # K
    window: int = 5  # N
    empty_frames: int = 3  # M
    margin: float = 0.0  # top-1 minus top-2 below this is unsure
    unknown_labels: tuple[str, ...] = ()  # e.g. a trained "Other" class
    class_thresholds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    event_id: str
    label: str
    score: float
    frames: int
    first_ts: float
    last_ts: float


class Decider:
    """Feed it every classified frame; it returns an Event when an object is decided."""

    def __init__(self, rules: DecisionRules):
        self.rules = rules
        self.votes: deque = deque(maxlen=rules.window)
        self.latched = False
        self.empty_run = 0

    def _vote(self, top: tuple[Class, ...]):
        r = self.rules
        if not top:
            return _UNSURE
        best = top[0]
        if best.label in r.background_labels:
            return _BACKGROUND
        second = top[1].score if len(top) > 1 else 0.0
        threshold = r.class_thresholds.get(best.label, r.threshold)
        if best.score < threshold or best.score - second < r.margin:
            return _UNSURE
        return UNKNOWN if best.label in r.unknown_labels else best.label

    def _is_empty(self, vote) -> bool:
        if self.rules.background_labels:
            return vote is _BACKGROUND
        return vote is _UNSURE

    def update(self, top: tuple[Class, ...], ts: float,
               out_of_distribution: bool = False) -> Event | None:
        """Feed one frame; `out_of_distribution` (the bundle's OOD rule rejected it) makes
        its vote unsure: enough such frames give an `unknown` event, never a value."""
        vote = self._vote(top)
        if out_of_distribution and vote is not _BACKGROUND:
            vote = _UNSURE
        score = top[0].score if top else 0.0
        self.empty_run = self.empty_run + 1 if self._is_empty(vote) else 0
        if self.latched:
            if self.empty_run >= self.rules.empty_frames:
                self.latched = False
                self.votes.clear()
            return None
        self.votes.append((vote, score, ts))
        k = self.rules.min_frames
        counts: dict = {}
        for v, _, _ in self.votes:
            counts[v] = counts.get(v, 0) + 1
        decided = None
        for v, n in counts.items():
            if isinstance(v, str) and n >= k:
                decided = v
                break
        if decided is None and self.rules.background_labels and counts.get(_UNSURE, 0) >= k:
            decided = UNKNOWN
        if decided is None:
            return None
        # an unknown decided by unsure frames is supported by those frames
        match = decided if counts.get(decided, 0) >= k else _UNSURE
        support = [(s, t) for v, s, t in self.votes if v == match]
        self.latched = True
        self.empty_run = 0
        self.votes.clear()
        return Event(uuid.uuid4().hex, decided, max(s for s, _ in support), len(support),
                     support[0][1], support[-1][1])
