"""The decider: one event per object, latch until empty, reject as unknown."""

from device.decision import UNKNOWN, Decider, DecisionRules
from device.processing import Class


def top(label, score, second=("x", 0.0)):
    return (Class(0, label, score), Class(1, second[0], second[1]))


def run(rules, frames):
    d = Decider(rules)
    return [e for i, f in enumerate(frames) if (e := d.update(f, float(i))) is not None]


BG = DecisionRules(threshold=0.6, background_labels=("empty",), min_frames=3, window=5,
                   empty_frames=2)


def test_one_event_per_pass_with_background():
    empty = top("empty", 0.9)
    note = top("note_5", 0.9)
    frames = [empty] * 3 + [note] * 8 + [empty] * 3 + [top("note_10", 0.8)] * 4 + [empty] * 2
    events = run(BG, frames)
    assert [e.label for e in events] == ["note_5", "note_10"]
    assert events[0].frames == 3 and events[0].first_ts == 3.0 and events[0].last_ts == 5.0
    assert len({e.event_id for e in events}) == 2


def test_flicker_inside_a_pass_does_not_split_it():
    note, empty = top("note_5", 0.9), top("empty", 0.9)
    frames = [note] * 4 + [empty] + [note] * 4 + [empty] * 2 + [note] * 3
    assert [e.label for e in run(BG, frames)] == ["note_5", "note_5"]  # one empty frame < M


def test_k_of_n_needs_enough_support():
    note, empty = top("note_5", 0.9), top("empty", 0.9)
    assert run(BG, [note, empty, note, empty, empty, empty, note]) == []


def test_background_frames_never_make_events():
    assert run(BG, [top("empty", 0.99)] * 20) == []


def test_unsure_object_is_rejected_as_unknown_once():
    unsure = top("note_5", 0.4)
    events = run(BG, [top("empty", 0.9)] * 2 + [unsure] * 10 + [top("empty", 0.9)] * 2)
    assert [e.label for e in events] == [UNKNOWN]


def test_margin_makes_close_calls_unknown():
    rules = DecisionRules(threshold=0.4, background_labels=("empty",), margin=0.2)
    close = top("note_50000", 0.5, ("note_200000", 0.45))
    assert [e.label for e in run(rules, [close] * 5)] == [UNKNOWN]


def test_without_background_empty_means_no_class_over_threshold():
    rules = DecisionRules(threshold=0.6, min_frames=2, window=3, empty_frames=2)
    note, nothing = top("a", 0.9), top("a", 0.2)
    events = run(rules, [note] * 5 + [nothing] * 2 + [note] * 3 + [nothing])
    assert [e.label for e in events] == ["a", "a"]
    # without a background class, unsure frames are just "empty": no unknown events
    assert run(rules, [nothing] * 10) == []


def test_per_class_threshold_and_other_class_maps_to_unknown():
    rules = DecisionRules(threshold=0.6, background_labels=("empty",),
                          class_thresholds={"note_500000": 0.95}, unknown_labels=("Other",))
    # 0.9 is below this class's own 0.95: unsure, so a single reject
    assert [e.label for e in run(rules, [top("note_500000", 0.9)] * 6)] == [UNKNOWN]
    assert [e.label for e in run(rules, [top("Other", 0.9)] * 4)] == [UNKNOWN]
    assert [e.label for e in run(rules, [top("note_500000", 0.97)] * 4)] == ["note_500000"]
