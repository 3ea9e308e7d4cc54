"""Frames kept for training: cmd/capture and the doubtful-frame ring against a real daemon
(replay camera, the demo bundle, a real mosquitto), and the recorder's and labelling
store's bounds on real files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from device.cameras.base import Frame
from device.config.web import CaptureConfig
from device.daemon.capture import Recorder, check_label, doubtful_reason
from device.web.frames import FrameStore

from .conftest import Recorder as MqttRecorder
from .webutil import get_json, wait_until, web_daemon

K = SimpleNamespace


def has_room(rec: Recorder) -> None:
    """The next tap must find room in the writer's bounded queue (a full one skips it)."""
    wait_until(lambda: not rec.queue.full(), 10, "the capture writer to take a frame")


def ranked(*pairs):
    return K(top_k=tuple(K(id=i, label=lb, score=s) for i, (lb, s) in enumerate(pairs)))


def verdict(reason, label="note_5"):
    return K(label=label, accepted=reason == "accepted", reason=reason, ood_score=None)


SPEC = K(width=32, height=32, resize="stretch",
         info=lambda: {"name": "m", "version": "2.0.0", "sha256": "0" * 64})


def frame(seq: int, ts: float | None = None) -> Frame:
    img = np.full((48, 64, 3), seq % 255, np.uint8)
    return Frame(img, ts if ts is not None else time.time(), seq, 1.0)


def test_doubtful_reasons():
    sure = ranked(("note_5", 0.95), ("note_10", 0.03))
    close = ranked(("note_5", 0.48), ("note_10", 0.45))
    assert doubtful_reason(sure, verdict("accepted"), 0.1) == ""
    assert doubtful_reason(close, verdict("accepted"), 0.1) == "margin"
    assert doubtful_reason(close, verdict("accepted"), 0.0) == ""
    assert doubtful_reason(sure, verdict("below_threshold"), 0.1) == "below_threshold"
    assert doubtful_reason(close, verdict("background", "empty"), 0.1) == ""  # nothing there
    assert doubtful_reason(sure, verdict("out_of_distribution"), 0.1) == "out_of_distribution"
    assert check_label("_unlabelled") == "_unlabelled"
    for bad in ("", "../x", ".hidden", "a/b", "x" * 65, 5):
        with pytest.raises(ValueError):
            check_label(bad)


def test_doubtful_ring_is_bounded_and_rate_limited(tmp_path):
    cfg = CaptureConfig(keep_doubtful=True, doubtful_interval=0.0, doubtful_max_files=3)
    rec = Recorder(cfg, tmp_path, "dev-1")
    close = ranked(("note_5", 0.5), ("note_10", 0.45))
    for seq in range(1, 8):
        rec.tap(frame(seq, 1000.0 + seq), close, SPEC, verdict("accepted"))
        has_room(rec)  # the writer's bounded queue must not skip in this test
    rec.close()
    kept = sorted((tmp_path / "doubtful").glob("*.jpg"))
    assert len(kept) == 3 and rec.saved["doubtful"] == 7
    assert [json.loads(p.with_suffix(".json").read_text())["seq"] for p in kept] == [5, 6, 7]
    assert len(list((tmp_path / "doubtful" / ".model").glob("*.png"))) == 3
    side = json.loads(kept[0].with_suffix(".json").read_text())
    assert side["reason"] == "margin" and side["model"]["version"] == "2.0.0"
    assert side["top_k"][0] == {"id": 0, "label": "note_5", "score": 0.5}
    # rate limit: one doubtful frame per interval however many arrive
    rec = Recorder(CaptureConfig(keep_doubtful=True, doubtful_interval=60), tmp_path / "b",
                   "dev-1")
    for seq in range(5):
        rec.tap(frame(seq), close, SPEC, verdict("accepted"))
    rec.close()
    assert rec.saved["doubtful"] == 1


def test_capture_stops_at_its_size_bound(tmp_path):
    rec = Recorder(CaptureConfig.model_construct(**{**CaptureConfig().model_dump(),
                                                    "max_bytes": 6000}), tmp_path, "dev-1")
    assert rec.start("note_5", 50, 0.0)["ok"]
    for seq in range(50):
        rec.tap(frame(seq, 2000.0 + seq), ranked(("note_5", 0.9)), SPEC, verdict("accepted"))
        has_room(rec)
    rec.close()
    assert "max_bytes" in rec.full and rec.job is None
    size = sum(f.stat().st_size for f in (tmp_path / "dataset").rglob("*") if f.is_file())
    assert 0 < size <= 6000


def test_labelling_store_moves_rejects_and_deletes(tmp_path):
    rec = Recorder(CaptureConfig(keep_doubtful=True, doubtful_interval=0), tmp_path, "dev-1")
    for seq in range(3):
        rec.tap(frame(seq, 3000.0 + seq), ranked(("a", 0.5), ("b", 0.49)), SPEC,
                verdict("accepted"))
        has_room(rec)
    rec.close()
    store = FrameStore(tmp_path)
    ids = [f["id"] for f in store.list()]
    assert len(ids) == 3 and all(i.startswith("doubtful/") for i in ids)
    moved = store.apply("label", ids[:2], "note_20")["ids"]
    assert all(i.startswith("dataset/note_20/") for i in moved)
    assert len(list((tmp_path / "dataset" / "note_20").glob("*.jpg"))) == 2
    assert len(list((tmp_path / "dataset" / ".model" / "note_20").glob("*.png"))) == 2
    store.apply("reject", [moved[0]])
    assert len(list((tmp_path / "dataset" / "_rejected").glob("*.jpg"))) == 1
    store.apply("delete", [ids[2]])
    assert not list((tmp_path / "doubtful").glob("*.jpg"))
    assert not list((tmp_path / "doubtful" / ".model").glob("*.png"))
    for bad in (["../../etc/passwd"], ["doubtful/../x.jpg"], ["dataset/.model/x.jpg"], [], "x"):
        with pytest.raises((ValueError, FileNotFoundError)):
            store.apply("delete", bad)
    with pytest.raises(ValueError):
        store.apply("label", [moved[1]], "../up")


def capture_cmd(rec: MqttRecorder, payload: dict) -> dict:
    before = len(rec.on("cmd/capture/reply"))
    rec.client.publish("coral-classifier/pi-web/cmd/capture", json.dumps(payload),
                       qos=1).wait_for_publish(5)
    rec.wait_for(lambda r: len(r.on("cmd/capture/reply")) > before, 15, "capture reply")
    return rec.json_on("cmd/capture/reply")[-1]


def test_capture_command_saves_frames_both_ways(tmp_path, broker, daemon_factory):
    rec = MqttRecorder(broker.port, "coral-classifier/pi-web/#")
    try:
        d, url, state = web_daemon(tmp_path, broker.port, daemon_factory, web={})
        wait_until(lambda: get_json(url + "/api/live")["seq"], 30, "frames")
        bad = capture_cmd(rec, {"label": "../etc", "frames": 2})
        assert not bad["ok"] and "label" in bad["error"]
        assert not capture_cmd(rec, {"label": "x", "frames": 0})["ok"]
        assert not capture_cmd(rec, {"label": "x", "every": "soon"})["ok"]
        reply = capture_cmd(rec, {"label": "_unlabelled", "frames": 3, "every": 0.2})
        assert reply["ok"] and reply["folder"] == str(state / "dataset" / "_unlabelled")
        folder = state / "dataset" / "_unlabelled"
        jpgs = wait_until(lambda: len(list(folder.glob("*.jpg"))) == 3
                          and sorted(folder.glob("*.jpg")), 20, "3 captured frames")
        for jpg in jpgs:
            assert jpg.name.startswith("pi-web__")
            assert cv2.imread(str(jpg)).shape == (120, 160, 3)  # the camera's resolution
            model_view = state / "dataset" / ".model" / "_unlabelled" / f"{jpg.stem}.png"
            assert cv2.imread(str(model_view)).shape == (96, 96, 3)  # the model's input
            side = json.loads(jpg.with_suffix(".json").read_text())
            assert side["reason"] == "capture" and side["model"]["name"] == "demo-notes"
            assert side["device_id"] == "pi-web" and side["top_k"]
        stamps = [json.loads(j.with_suffix(".json").read_text())["ts"] for j in jpgs]
        assert min(np.diff(sorted(stamps))) >= 0.19  # every 0.2 s
        assert get_json(url + "/api/status")["capture"]["saved"]["capture"] == 3
        assert d.proc.poll() is None
    finally:
        rec.close()


def test_doubtful_frames_kept_by_a_running_daemon(tmp_path, broker, daemon_factory):
    # every note frame is doubtful by margin; the ring keeps at most 4, one per 0.3 s
    _d, url, state = web_daemon(tmp_path, broker.port, daemon_factory, web={}, capture={
        "keep_doubtful": True, "doubtful_margin": 1.0, "doubtful_interval": 0.3,
        "doubtful_max_files": 4})
    wait_until(lambda: get_json(url + "/api/status")["capture"]["saved"]["doubtful"] >= 6,
               40, "six doubtful frames")
    kept = sorted((state / "doubtful").glob("*.jpg"))
    assert 1 <= len(kept) <= 4
    sides = [json.loads(p.with_suffix(".json").read_text()) for p in kept]
    assert all(s["reason"] == "margin" and s["top_k"][0]["label"] != "empty" for s in sides)
    assert all(s["model"]["version"] == "1.0.0" for s in sides)
    gaps = np.diff(sorted(s["ts"] for s in sides))
    assert len(gaps) == 0 or gaps.min() >= 0.2


def test_frames_behind_unknown_events_are_kept(tmp_path, broker, daemon_factory):
    # a decision threshold no frame reaches: every note passing is an unknown event
    _d, url, state = web_daemon(tmp_path, broker.port, daemon_factory, web={},
                               capture={"keep_doubtful": True, "doubtful_margin": 0.0},
                               decision={"threshold": 0.999})
    wait_until(lambda: any(e["label"] == "unknown"
                           for e in get_json(url + "/api/events")["events"]), 40,
               "an unknown event")
    kept = wait_until(lambda: sorted(Path(state / "doubtful").glob("*.jpg")), 10,
                      "frames behind it")
    sides = [json.loads(p.with_suffix(".json").read_text()) for p in kept]
    assert {s["reason"] for s in sides} == {"unknown_event"}
    assert all(s["event_id"] and s["top_k"][0]["label"].startswith("note_") for s in sides)
