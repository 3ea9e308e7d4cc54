"""A foreign object is not an empty slot: the scene against the learned empty slot."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np

from device.scene import EmptyScene
from device.tools.synthetic import render

from .conftest import CORAL_IMAGES, ROOT, Recorder, need_shared, write_config

DEMO = ROOT / "compiled_models" / "demo-notes"


def empties(n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)  # each with its own brightness (auto-exposure)
    return [render("empty", rng, 160, 120) for _ in range(n)]


def test_empty_frames_stay_empty_through_brightness_changes_and_an_object_does_not():
    scene = EmptyScene()
    assert not any(scene.is_foreign(f) for f in empties(30))
    rng = np.random.default_rng(2)
    odd = render("note_10", rng, 160, 120)  # something the model might call empty
    assert scene.is_foreign(odd) and scene.changed(odd) > 0.1
    assert not scene.is_foreign(empties(1, seed=9)[0])


def test_a_still_changed_scene_becomes_the_new_empty_slot():
    scene = EmptyScene(relearn_frames=20)
    for f in empties(5):
        scene.is_foreign(f)
    moved = np.roll(empties(1, seed=3)[0], 40, axis=1)
    moved[:, :40] = 20  # the camera was bumped: a dark band from now on
    flags = [scene.is_foreign(moved) for _ in range(25)]
    assert flags[0] and not flags[-1]  # foreign at first, then the new empty slot


def cat_replay(folder, n_empty: int = 6) -> None:
    """Empty slot, a cat, empty slot, a note: the model calls the cat 'empty'."""
    need_shared(CORAL_IMAGES / "cat.bmp")
    cat = cv2.resize(cv2.imread(str(CORAL_IMAGES / "cat.bmp")), (160, 120))
    rng = np.random.default_rng(4)
    frames = [cv2.cvtColor(render("empty", rng, 160, 120), cv2.COLOR_RGB2BGR)
              for _ in range(n_empty)]
    frames += [cat] * 6 + frames[:4]
    frames += [cv2.cvtColor(render("note_10", rng, 160, 120), cv2.COLOR_RGB2BGR)] * 5
    frames += frames[:4]
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), f)


def test_a_cat_in_the_slot_is_an_unknown_foreign_object_event(tmp_path, broker,
                                                              daemon_factory):
    cat_replay(tmp_path / "replay")
    bundle = tmp_path / "demo"
    shutil.copytree(DEMO, bundle)
    cfg = write_config(tmp_path / "cat.toml",
                       camera={"type": "replay", "source": str(tmp_path / "replay"),
                               "fps": 40, "loop": False},
                       model={"path": str(bundle), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "cat-1"},
                       decision={"mode": "event"})
    rec = Recorder(broker.port, "coral-classifier/cat-1/#")
    try:
        d = daemon_factory(cfg)
        assert d.proc.wait(60) == 0, d.output()
        rec.wait_for(lambda r: r.json_on("/status")[-1]["state"] == "stopped", 15, "stop")
        events = rec.json_on("/event")
        assert [(e["label"], e["verdict"], e["reason"]) for e in events] == [
            ("unknown", "unknown", "foreign_object"), ("note_10", "accepted", "accepted")]
        assert events[0]["guess"] == "empty"
        assert rec.json_on("/counts")[-1]["counts"] == {"unknown": 1, "note_10": 1}
    finally:
        rec.close()
    # switched off: the cat is an empty slot again, as before
    text = cfg.read_text().replace('mode = "event"', 'mode = "event"\nforeign_object = false')
    cfg.write_text(text.replace("cat-1", "cat-2"))
    rec = Recorder(broker.port, "coral-classifier/cat-2/event")
    try:
        d = daemon_factory(cfg)
        assert d.proc.wait(60) == 0, d.output()
        rec.wait_for(lambda r: r.json_on("/event"), 15, "the note's event")
        assert [json.loads(p)["label"] for p in rec.on("/event")] == ["note_10"]
    finally:
        rec.close()
