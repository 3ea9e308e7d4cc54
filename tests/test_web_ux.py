"""What the web page's JSON says without a browser: the verdict vocabulary and the MQTT
state in /api/live, and the labelling store refusing a class the model does not know."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from device.decision import Event
from device.openset import Verdict
from device.web.frames import FrameStore
from device.web.live import LiveHub

KEYS = {"seq", "rois", "regions", "top_k", "mqtt", "accepted", "reason", "verdict",
        "explanation"}


def frame(seq: int):
    return SimpleNamespace(seq=seq, ts=1.0, image=np.zeros((48, 64, 3), np.uint8), roi="")


def classified(label: str, score: float):
    return SimpleNamespace(top_k=(SimpleNamespace(label=label, score=score),))


SPEC = SimpleNamespace(info=lambda: {"name": "m", "version": "1"})


@pytest.mark.parametrize("verdict, word, plain", [
    (Verdict("50000_vnd", 0.97, True, 0.1, "accepted"), "accepted", "accepted"),
    (Verdict("50000_vnd", 0.58, False, 0.2, "below_threshold"), "unknown",
     "not sure enough what this is"),
    (Verdict("50000_vnd", 0.8, False, 0.7, "out_of_distribution"), "unknown",
     "does not look like anything the model was taught"),
    (Verdict("background", 0.9, False, None, "background"), "empty", "nothing in the slot"),
    (Verdict("2000_vnd", 0.95, False, None, "refused"), "refused",
     "a note this machine refuses"),
])
def test_live_json_has_the_verdict_in_plain_words(verdict, word, plain):
    up = [True]
    hub = LiveHub(connected=lambda: up[0], broker="127.0.0.1:1883")
    before = hub.summary()
    assert before.keys() >= KEYS and before["verdict"] == ""  # same keys before a frame
    assert before["mqtt"] == {"connected": True, "broker": "127.0.0.1:1883"}
    hub.tap(frame(1), classified(verdict.label, verdict.score), SPEC, verdict)
    got = hub.summary()
    assert got.keys() >= KEYS
    assert (got["verdict"], got["explanation"]) == (word, plain)
    assert got["accepted"] is verdict.accepted and got["reason"] == verdict.reason
    up[0] = False
    assert hub.summary()["mqtt"]["connected"] is False
    json.dumps(got)


def test_live_json_without_a_connection_source_says_unknown():
    assert LiveHub().summary()["mqtt"] == {"connected": None, "broker": ""}


def test_events_carry_their_verdict():
    hub = LiveHub()
    hub.tap(frame(1), classified("x", 0.9), SPEC, Verdict("x", 0.9, True, None, "accepted"))
    hub.event(Event("e1", "50000_vnd", 0.97, 5, 1.0, 2.0))
    hub.event(Event("e2", "unknown", 0.61, 5, 3.0, 4.0, "unknown", "out_of_distribution",
                    "20000_vnd", 0.61))
    hub.event(Event("e3", "1000_vnd", 0.93, 5, 5.0, 6.0, "refused", "refused"))
    assert [e["verdict"] for e in hub.events] == ["accepted", "unknown", "refused"]
    unknown = hub.events[1]
    assert (unknown["guess"], unknown["guess_score"]) == ("20000_vnd", 0.61)
    assert "does not look like anything" in unknown["explanation"]
    assert set(hub.thumbs) == {"e1", "e2", "e3"}


def saved(root: Path, name: str) -> str:
    folder = root / "dataset" / "_unlabelled"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jpg").write_bytes(b"\xff\xd8jpeg")
    (folder / f"{name}.json").write_text("{}")
    return f"dataset/_unlabelled/{name}.jpg"


def test_a_typo_class_is_refused_and_makes_no_folder(tmp_path):
    store = FrameStore(tmp_path, labels=lambda: ["10000_vnd", "500000_vnd", "background"])
    fid = saved(tmp_path, "a")
    with pytest.raises(ValueError, match=r"not one of the model.s classes.*new_class"):
        store.apply("label", [fid], "1000_vnd")
    assert not (tmp_path / "dataset" / "1000_vnd").exists()
    assert (tmp_path / fid).is_file()
    for bad in ("_rejected", "_unlabelled"):
        with pytest.raises(ValueError, match="not classes"):
            store.apply("new_class", [fid], bad)
    moved = store.apply("label", [fid], "10000_vnd")["ids"]
    assert moved == ["dataset/10000_vnd/a.jpg"]


def test_a_new_class_only_when_asked_for_then_known(tmp_path):
    store = FrameStore(tmp_path, labels=lambda: ["10000_vnd"])
    a, b = saved(tmp_path, "a"), saved(tmp_path, "b")
    assert store.apply("new_class", [a], "1000_vnd")["ids"] == ["dataset/1000_vnd/a.jpg"]
    assert store.classes() == ["10000_vnd", "1000_vnd"]  # the model's first
    assert store.apply("label", [b], "1000_vnd")["ids"] == ["dataset/1000_vnd/b.jpg"]
    with pytest.raises(ValueError, match="action must be one of label, new_class"):
        store.apply("rename", [b], "x")


def test_without_the_models_labels_any_wellformed_name_is_taken(tmp_path):
    store = FrameStore(tmp_path)  # as the capture tests use it
    fid = saved(tmp_path, "a")
    assert store.apply("label", [fid], "note_20")["ids"] == ["dataset/note_20/a.jpg"]
