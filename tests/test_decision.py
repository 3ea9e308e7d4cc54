"""The decider counts the judge's verdicts: one event per object, latch until empty, an
`unknown` event for an object that stays unsure, a `refused` one for a refused class. It
never applies a threshold itself (device.policy.judge has)."""

from device.decision import UNKNOWN, Decider, Voting
from device.openset import Verdict


def ok(label, score=0.9):
    return Verdict(label, score, True, None, "accepted")


def no(label, reason, score=0.5):
    return Verdict(label, score, False, None, reason)


EMPTY = no("empty", "background", 0.9)
BG = Voting(min_frames=3, window=5, empty_frames=2, unknown_events=True)


def run(voting, frames):
    d = Decider(voting)
    return [e for i, f in enumerate(frames) if (e := d.update(f, float(i))) is not None]


def test_one_event_per_pass_with_background():
    frames = [EMPTY] * 3 + [ok("note_5")] * 8 + [EMPTY] * 3 + [ok("note_10", 0.8)] * 4 \
        + [EMPTY] * 2
    events = run(BG, frames)
    assert [(e.label, e.verdict) for e in events] == [("note_5", "accepted"),
                                                      ("note_10", "accepted")]
    assert events[0].frames == 3 and events[0].first_ts == 3.0 and events[0].last_ts == 5.0
    assert events[1].score == 0.8 and len({e.event_id for e in events}) == 2


def test_flicker_inside_a_pass_does_not_split_it():
    frames = [ok("note_5")] * 4 + [EMPTY] + [ok("note_5")] * 4 + [EMPTY] * 2 + [ok("note_5")] * 3
    assert [e.label for e in run(BG, frames)] == ["note_5", "note_5"]  # one empty frame < M


def test_k_of_n_needs_enough_support():
    note = ok("note_5")
    assert run(BG, [note, EMPTY, note, EMPTY, EMPTY, EMPTY, note]) == []


def test_background_frames_never_make_events():
    assert run(BG, [EMPTY] * 20) == []


def test_unsure_object_is_one_unknown_event_with_its_best_guess_and_reason():
    frames = [EMPTY] * 2 + [no("note_5", "below_threshold", 0.4)] * 6 \
        + [no("note_10", "out_of_distribution", 0.8)] * 2 + [EMPTY] * 2
    events = run(BG, frames)
    assert len(events) == 1
    e = events[0]
    assert (e.label, e.verdict, e.guess, e.guess_score, e.reason) == \
        (UNKNOWN, "unknown", "note_5", 0.4, "below_threshold")
    assert e.count_key == UNKNOWN


def test_mixed_reasons_still_make_one_unknown():
    frames = [no("a", "margin"), no("b", "out_of_distribution"), no("a", "below_threshold")]
    assert [(e.label, e.guess) for e in run(BG, frames * 2)] == [(UNKNOWN, "a")]


def test_refused_class_is_a_refused_event_counted_apart():
    frames = [EMPTY] + [no("1000_vnd", "refused", 0.95)] * 4 + [EMPTY] * 2 \
        + [no("50000_vnd", "not_in_accept_list", 0.9)] * 3
    events = run(BG, frames)
    assert [(e.label, e.verdict, e.reason) for e in events] == [
        ("1000_vnd", "refused", "refused"), ("50000_vnd", "refused", "not_in_accept_list")]
    assert events[0].count_key == "refused:1000_vnd"
    assert events[0].score == 0.95


def test_trained_other_class_is_unknown():
    other = no("Other", "unknown", 0.9)
    events = run(BG, [other] * 4)
    assert [(e.label, e.verdict, e.guess) for e in events] == [(UNKNOWN, "unknown", "Other")]


def test_without_background_unsure_frames_are_empty():
    voting = Voting(min_frames=2, window=3, empty_frames=2, unknown_events=False)
    note, nothing = ok("a"), no("a", "below_threshold", 0.2)
    events = run(voting, [note] * 5 + [nothing] * 2 + [note] * 3 + [nothing])
    assert [e.label for e in events] == ["a", "a"]
    # without a background class, unsure frames are just "empty": no unknown events
    assert run(voting, [nothing] * 10) == []
