"""From per-frame verdicts to one decision per object (pure, no I/O).

The decider never applies a threshold: ``device.policy.judge`` has already said of each
frame whether it is accepted, refused, empty or unsure. A class becomes an event when K
of the last N frames vote for it (accepted, or refused: a `refused` event, the note to
hand back); the decider then latches until the scene is empty again (M frames of the
background class; without one, M frames that are not accepted), so one note passing the
camera gives exactly one event. With a background class, something that stays in view but
unsure for K of N frames becomes one `unknown` event carrying its best guess and why:
a counterfeit, an untaught note or a foreign object in the slot.
"""

from __future__ import annotations

import uuid
from collections import Counter, deque
from dataclasses import dataclass

from device.openset import Verdict

UNKNOWN = "unknown"
REFUSED_PREFIX = "refused:"  # count key of a refused class: 'refused:1000_vnd'
_BACKGROUND = "\x00background"
_UNSURE = "\x00unsure"


@dataclass(frozen=True)
class Voting:
    """How many frames make a decision: K of the last N, and M empty frames to re-arm."""

    min_frames: int = 3  # K
    window: int = 5  # N
    empty_frames: int = 3  # M
    unknown_events: bool = True  # unsure objects become `unknown` events (needs a background)


@dataclass(frozen=True)
class Event:
    event_id: str
    label: str  # the class; 'unknown' when nothing was recognised
    score: float
    frames: int
    first_ts: float
    last_ts: float
    verdict: str = "accepted"  # accepted | refused | unknown
    reason: str = "accepted"  # the judge's reason (most frequent among the frames)
    guess: str | None = None  # unknown: the most frequent top-1 class among the frames
    guess_score: float | None = None  # ... and its best score
    value: float | None = None  # what the note is worth (the bundle's denominations)
    currency: str | None = None  # ISO 4217

    @property
    def count_key(self) -> str:
        """What the counters count: the class, 'unknown', or 'refused:<class>'."""
        return REFUSED_PREFIX + self.label if self.verdict == "refused" else self.label


def _vote(v: Verdict) -> str:
    if v.accepted:
        return v.label
    if v.verdict == "refused":
        return REFUSED_PREFIX + v.label
    if v.verdict == "empty":
        return _BACKGROUND
    if v.reason == "unknown":  # a trained 'other' class: recognised as not ours
        return UNKNOWN
    return _UNSURE


class Decider:
    """Feed it every judged frame; it returns an Event when an object is decided."""

    def __init__(self, voting: Voting):
        self.voting = voting
        self.votes: deque[tuple[str, Verdict, float]] = deque(maxlen=voting.window)
        self.latched = False
        self.empty_run = 0

    def _is_empty(self, vote: str) -> bool:
        if self.voting.unknown_events:
            return vote == _BACKGROUND
        return vote in (_BACKGROUND, _UNSURE)

    def update(self, verdict: Verdict, ts: float) -> Event | None:
        """Feed one frame's verdict; an Event when this frame decides an object."""
        vote = _vote(verdict)
        self.empty_run = self.empty_run + 1 if self._is_empty(vote) else 0
        if self.latched:
            if self.empty_run >= self.voting.empty_frames:
                self.latched = False
                self.votes.clear()
            return None
        self.votes.append((vote, verdict, ts))
        counts = Counter(v for v, _, _ in self.votes)
        k = self.voting.min_frames
        decided = next((v for v, n in counts.items()
                        if n >= k and v not in (_BACKGROUND, _UNSURE)), None)
        if decided is None and self.voting.unknown_events and counts[_UNSURE] >= k:
            decided = _UNSURE
        if decided is None:
            return None
        support = [(v, t) for key, v, t in self.votes if key == decided]
        self.latched = True
        self.empty_run = 0
        self.votes.clear()
        return _event(decided, support)


def _event(decided: str, support: list[tuple[Verdict, float]]) -> Event:
    frames = [v for v, _ in support]
    first, last = support[0][1], support[-1][1]
    reason = Counter(v.reason for v in frames).most_common(1)[0][0]
    if decided in (_UNSURE, UNKNOWN):
        guess = Counter(v.label for v in frames).most_common(1)[0][0]
        guess_score = max(v.score for v in frames if v.label == guess)
        return Event(uuid.uuid4().hex, UNKNOWN, guess_score, len(frames), first, last,
                     "unknown", reason, guess, guess_score)
    label = decided.removeprefix(REFUSED_PREFIX)
    verdict = "refused" if decided.startswith(REFUSED_PREFIX) else "accepted"
    return Event(uuid.uuid4().hex, label, max(v.score for v in frames), len(frames), first,
                 last, verdict, reason)
