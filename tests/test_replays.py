"""Per object, not per frame: replays of a photo through the device's decider."""

from __future__ import annotations

import numpy as np

from device.openset import OperatingPoint
from host_training.openset import replays

LABELS = ("background", "note_a", "note_b")
POINT = OperatingPoint(threshold=0.7, background_labels=["background"])


def _photo() -> np.ndarray:
    rng = np.random.default_rng(1)
    img = np.zeros((64, 64, 3), np.uint8)
    img[16:48, 8:56] = rng.integers(60, 255, (32, 48, 3))  # a "note" on a dark slot
    return img


def test_a_replay_slides_in_and_settles_on_the_photo():
    photo = _photo()
    clip = replays.replay_frames(photo, seed=3)
    assert clip.shape == (replays.FRAMES, 64, 64, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip, replays.replay_frames(photo, seed=3))  # seeded
    assert not np.array_equal(clip, replays.replay_frames(photo, seed=4))

    def off(frame):
        return float(np.abs(frame.astype(int) - photo).mean())

    assert off(clip[-1]) < off(clip[0])  # it arrives: the last frame is nearer the photo


def _scores(rows: list[list[float]]):
    return lambda clip: [np.asarray(rows[: len(clip)], np.float32)]


def test_a_note_accepted_on_one_frame_in_three_gives_no_accepted_event():
    """Per frame 3 of 8 accepted as note_a; the decider needs 3 of 5 agreeing: the object
    is an `unknown` event (unsure frames agree first), not an accepted note."""
    sure, unsure = [0.05, 0.9, 0.05], [0.1, 0.5, 0.4]
    rows = [sure if i % 3 == 0 else unsure for i in range(replays.FRAMES)]
    (o,) = replays.replay(_scores(rows), POINT, LABELS, [_photo()])
    assert o.frames_accepted == 3 and o.frames == replays.FRAMES
    assert o.event is not None and o.event.verdict == "unknown" and o.accepted_as is None


def test_per_object_figures_count_events_and_values():
    a = [[0.05, 0.9, 0.05]] * replays.FRAMES  # every frame note_a
    b = [[0.05, 0.05, 0.9]] * replays.FRAMES  # every frame note_b
    empty = [[0.9, 0.05, 0.05]] * replays.FRAMES  # the slot looks empty: no event at all
    groups = {
        "vnd-phone/known": replays.replay(_scores(a), POINT, LABELS, [_photo()] * 2)
        + replays.replay(_scores(b), POINT, LABELS, [_photo()]),
        "vnd-phone/untaught": replays.replay(_scores(empty), POINT, LABELS, [_photo()]),
    }
    fig = replays.figures(groups, {"vnd-phone/known": ["note_a", "note_b", "note_b"]})
    known = fig["vnd-phone/known"]
    assert known["n"] == 3 and known["accepted"] == 1.0
    assert known["taken_for"] == {"note_a": 2, "note_b": 1}
    assert known["accepted_right"] == round(2 / 3, 4)  # the second note_a was a note_b
    assert known["accepted_wrong"] == round(1 / 3, 4)
    untaught = fig["vnd-phone/untaught"]
    assert untaught["accepted"] == 0.0 and untaught["no_event"] == 1
    assert untaught["frames_accepted"] == 0.0
    assert "per object" in replays.summary(fig) and "3 of 5" in replays.summary(fig)
