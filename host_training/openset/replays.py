"""Per object, not per frame: what the device's decider makes of a note held in the slot.

A per-frame false-accept is not what a machine does with a note: in event mode the daemon
counts a note only when K of the last N frames agree on it (device.decision.Decider, the
same class runs here), so a note accepted on one frame in three gives no event, and one
accepted on most frames does. Each photo becomes a short replay of a note settling into the
slot: it slides in from a small offset, with per-frame jitter in position, scale, angle and
exposure (a hand and a camera are never still); every frame is judged by the bundle's
operating point (device.policy.judge) and the decider's first event is the object's outcome:
accepted (as which class), refused, unknown, or none (undecided within the replay: the
machine times out and hands the note back, which is what an untaught note should get).

Seeded per photo, so the same bundle gives the same figures on every run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from device.decision import Decider, Event, Voting
from device.openset import OperatingPoint
from host_training.openset.calibrate import judge_all

FRAMES = 8  # frames per replay: the slide-in takes the first half, then it settles
Outputs = Callable[[np.ndarray], list[np.ndarray]]  # N x H x W x 3 -> every model output


def replay_frames(image: np.ndarray, seed: int, n: int = FRAMES) -> np.ndarray:
    """n frames of one photo as a camera sees a note put into the slot (n x H x W x 3)."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)  # where the note comes from
    start = rng.uniform(0.08, 0.18) * np.array([np.cos(angle) * w, np.sin(angle) * h])
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        slide = max(0.0, 1.0 - i / max(1.0, n / 2))  # 1 -> 0 over the first half
        dx, dy = start * slide + rng.normal(0, 0.01, 2) * (w, h)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.normal(0, 2.0),
                                    1.0 + rng.normal(0, 0.03))
        m[:, 2] += (dx, dy)
        frame = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT_101)
        gain = rng.uniform(0.88, 1.12)
        out[i] = np.clip(frame.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return out


@dataclass(frozen=True)
class Outcome:
    """One object's replay: the frames accepted and the decider's event (None: no event)."""

    frames_accepted: int
    frames: int
    event: Event | None

    @property
    def accepted_as(self) -> str | None:
        return self.event.label if self.event is not None and \
            self.event.verdict == "accepted" else None


def replay(outputs: Outputs, point: OperatingPoint, labels: Sequence[str],
           images: Sequence[np.ndarray], voting: Voting | None = None,
           frames: int = FRAMES, seed: int = 0) -> list[Outcome]:
    """Every image as a replay through judge() and a fresh Decider (the device's defaults
    unless `voting` is given)."""
    voting = voting or Voting()
    out = []
    for i, image in enumerate(images):
        clip = replay_frames(image, seed * 100_003 + i, frames)
        verdicts = judge_all(point, labels, outputs(clip))
        decider, event = Decider(voting), None
        for t, v in enumerate(verdicts):
            event = decider.update(v, float(t))
            if event is not None:
                break
        out.append(Outcome(sum(v.accepted for v in verdicts), len(verdicts), event))
    return out


def figures(by_group: dict[str, list[Outcome]], truth: dict[str, list[str]],
            voting: Voting | None = None) -> dict:
    """Per group: objects, the share of frames accepted, the share of objects accepted
    (an accepted event), what they were taken for; for groups with a known truth (the known
    notes from another phone) accepted right and as a wrong value per object."""
    voting = voting or Voting()
    out: dict = {"voting": {"min_frames": voting.min_frames, "window": voting.window}}
    for g, rows in by_group.items():
        if not rows:
            continue
        taken = [o.accepted_as for o in rows]
        r = {"n": len(rows), "frames": rows[0].frames,
             "frames_accepted": round(sum(o.frames_accepted for o in rows)
                                      / sum(o.frames for o in rows), 4),
             "accepted": round(sum(t is not None for t in taken) / len(rows), 4),
             "taken_for": dict(Counter(t for t in taken if t is not None).most_common()),
             "no_event": sum(o.event is None for o in rows)}
        if g.endswith("/known"):
            right = [t is not None and t == y for t, y in zip(taken, truth[g], strict=True)]
            r["accepted_right"] = round(sum(right) / len(rows), 4)
            r["accepted_wrong"] = round(r["accepted"] - r["accepted_right"], 4)
        out[g] = r
    return out


def summary(fig: dict) -> str:
    """One console line."""
    v = fig["voting"]
    parts = []
    for g, r in fig.items():
        if g == "voting":
            continue
        s = (f"{g} {100 * r['accepted']:.1f}% of {r['n']} objects accepted "
             f"({100 * r['frames_accepted']:.1f}% of frames)")
        if "accepted_right" in r:
            s += f", right {100 * r['accepted_right']:.1f}%, wrong value " \
                 f"{100 * r['accepted_wrong']:.1f}%"
        parts.append(s)
    return (f"per object (replays; an event needs {v['min_frames']} of {v['window']} "
            "frames): " + "; ".join(parts))
