"""Regions of interest and trigger gating: pure geometry and triggers, then the daemon with
a replay camera and a real broker (two regions, one busy; motion gating on a replay with
long still stretches; a GPIO burst from gpiozero's own mock pin)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from device.config import parse_config
from device.errors import ConfigError
from device.regions import RoiConfig, TriggerConfig, crop, roi_pixels, union_box
from device.tools.synthetic import EMPTY, render
from device.triggers import create_trigger

from .conftest import ROOT, Recorder, write_config

DEMO = ROOT / "compiled_models" / "demo-notes"


def test_roi_geometry():
    roi = RoiConfig(name="slot", x=0.25, y=0.5, width=0.5, height=0.5)
    assert roi_pixels(roi, 640, 480) == (160, 240, 480, 480)
    image = np.arange(480 * 640 * 3, dtype=np.uint32).reshape(480, 640, 3)
    assert crop(image, roi).shape == (240, 320, 3)
    assert np.shares_memory(crop(image, roi), image)  # a view: the resize copies
    other = RoiConfig(name="b", x=0.0, y=0.0, width=0.1, height=0.1)
    assert union_box((roi, other), 640, 480) == (0, 0, 480, 480)
    assert union_box((), 640, 480) == (0, 0, 640, 480)


@pytest.mark.parametrize("roi,needle", [
    ({"name": "a/b", "x": 0, "y": 0, "width": 0.5, "height": 0.5}, "topic level"),
    ({"name": "a", "x": 0.8, "y": 0, "width": 0.5, "height": 0.5}, "outside the frame"),
    ({"name": "a", "x": 0, "y": 0, "width": 0, "height": 0.5}, "width"),
])
def test_bad_regions_are_refused(roi, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_config({"camera": {"roi": [roi]}})


def test_region_names_are_unique():
    r = {"name": "a", "x": 0, "y": 0, "width": 0.5, "height": 0.5}
    with pytest.raises(ConfigError, match="unique"):
        parse_config({"camera": {"roi": [r, r]}})


def test_motion_trigger_classifies_moving_stretches_and_holds():
    t = create_trigger(TriggerConfig(mode="motion", hold_frames=2))
    still = np.full((120, 160, 3), 90, np.uint8)
    moved = still.copy()
    moved[20:100, 40:120] = 200
    decisions = [t.wants(f, i) for i, f in enumerate(
        [still, still, still, moved, moved, moved, moved, still, still, still])]
    # first frame (no reference), then still: no; the change and the change back: yes,
    # each followed by 2 held frames
    assert decisions == [True, False, False, True, True, True, False, True, True, True]


def test_interval_trigger():
    t = create_trigger(TriggerConfig(mode="interval", interval=1.0))
    ts = [0.0, 0.3, 0.9, 1.0, 1.5, 2.05, 2.1]
    assert [t.wants(None, x) for x in ts] == [True, False, False, True, False, True, False]


def test_gpio_trigger_bursts_on_an_edge_of_gpiozeros_mock_pin():
    gpiozero = pytest.importorskip("gpiozero", reason="gpiozero (dev extra) gives the mock pin")
    from gpiozero.pins.mock import MockFactory

    gpiozero.Device.pin_factory = MockFactory()
    t = create_trigger(TriggerConfig(mode="gpio", gpio_pin="GPIO17", burst_frames=3))
    try:
        assert not t.wants(None, 0)
        pin = gpiozero.Device.pin_factory.pin(17)
        pin.drive_high()  # a rising edge (pull-down)
        assert [t.wants(None, i) for i in range(5)] == [True, True, True, False, False]
        pin.drive_low()
        assert not t.wants(None, 9)
        assert t.edges == 1
    finally:
        t.close()
        gpiozero.Device.pin_factory.close()
        gpiozero.Device.pin_factory = None


def two_slot_replay(folder: Path, passes: list[str], gap: int, per_object: int,
                    still: bool = False) -> list[str]:
    """Frames 320x120: the left half shows the passes, the right half stays empty.
    With `still`, empty stretches repeat one identical frame (nothing moves)."""
    rng = np.random.default_rng(4)
    folder.mkdir(parents=True)
    right = render(EMPTY, rng)
    empty_left = render(EMPTY, rng)
    labels: list[str] = []
    for p in passes:
        labels += [EMPTY] * gap + [p] * per_object
    labels += [EMPTY] * gap
    for i, label in enumerate(labels):
        left = empty_left if (label == EMPTY and still) else render(label, rng)
        frame = np.concatenate([left, right], axis=1)
        cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return labels


ROIS = [{"name": "slot_a", "x": 0.0, "y": 0.0, "width": 0.5, "height": 1.0},
        {"name": "slot_b", "x": 0.5, "y": 0.0, "width": 0.5, "height": 1.0}]


def test_two_regions_events_only_where_objects_pass(tmp_path, broker, daemon_factory):
    passes = ["note_5", "note_20", "note_10"]
    two_slot_replay(tmp_path / "replay", passes, gap=4, per_object=5)
    cfg = write_config(
        tmp_path / "roi.toml",
        camera={"type": "replay", "source": str(tmp_path / "replay"), "fps": 50,
                "loop": False, "roi": ROIS},
        model={"path": str(DEMO), "backend": "cpu"},
        mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "roi-1"},
        decision={"mode": "event", "background_labels": ["empty"], "threshold": 0.6})
    rec = Recorder(broker.port, "coral-classifier/roi-1/#")
    try:
        d = daemon_factory(cfg)
        assert d.proc.wait(90) == 0, d.output()
        rec.wait_for(lambda r: r.on("availability")[-1:] == [b"stopped"], 10, "stopped")
        events = rec.json_on("/event")
        assert [(e["roi"], e["label"]) for e in events] == [("slot_a", p) for p in passes]
        counts = rec.json_on("/counts")[-1]
        assert counts["by_roi"] == {"slot_a": {"note_5": 1, "note_10": 1, "note_20": 1}}
        assert counts["counts"] == {"note_5": 1, "note_10": 1, "note_20": 1}
        states = rec.json_on("roi/slot_a/state")
        assert [s["state"] for s in states][:2] == ["note_5", "empty"]
        assert not rec.json_on("roi/slot_b/state") or all(
            s["state"] == "empty" for s in rec.json_on("roi/slot_b/state"))
        status = rec.json_on("/status")[-1]
        assert status["frames"] == 2 * status["frames_seen"]  # each region classified
    finally:
        rec.close()


def test_motion_gating_classifies_only_the_moving_stretches(tmp_path, broker, daemon_factory):
    passes = ["note_5", "note_10"]
    labels = two_slot_replay(tmp_path / "replay", passes, gap=30, per_object=6, still=True)
    cfg = write_config(
        tmp_path / "motion.toml",
        camera={"type": "replay", "source": str(tmp_path / "replay"), "fps": 100,
                "loop": False, "roi": ROIS[:1]},
        model={"path": str(DEMO), "backend": "cpu"},
        mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "motion-1",
              "status_interval": 0.2},
        decision={"mode": "event", "background_labels": ["empty"], "threshold": 0.6},
        trigger={"mode": "motion", "hold_frames": 4})
    rec = Recorder(broker.port, "coral-classifier/motion-1/#")
    try:
        d = daemon_factory(cfg)
        assert d.proc.wait(90) == 0, d.output()
        rec.wait_for(lambda r: r.on("availability")[-1:] == [b"stopped"], 10, "stopped")
        assert [e["label"] for e in rec.json_on("/event")] == passes
        status = rec.json_on("/status")[-1]
        assert status["frames_seen"] == len(labels)
        moving = sum(label != EMPTY for label in labels)
        # classified: the first frame, each pass (moving), the change back, and the holds
        assert moving <= status["frames"] <= moving + 1 + 2 * (1 + 4) + 2
        assert status["frames_gated"] == len(labels) - status["frames"]
        assert status["frames_gated"] >= len(labels) - moving - 14
    finally:
        rec.close()


def test_trainer_crops_training_images_like_the_device(tmp_path):
    """coral-train --roi: the same numbers cut the same pixels as [[camera.roi]]."""
    from host_training.train.dataset import load_dataset

    for cls, colour in (("a", (200, 10, 10)), ("b", (10, 200, 10))):
        (tmp_path / cls).mkdir()
        for i in range(2):
            image = np.zeros((120, 160, 3), np.uint8)
            image[:, :80] = (255, 255, 255)  # the left half: not the region
            image[:, 80:] = colour
            cv2.imwrite(str(tmp_path / cls / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    ds = load_dataset(tmp_path, 32, roi=(0.5, 0.0, 0.5, 1.0))
    for image, label in zip(ds.images, ds.labels, strict=True):
        expected = (200, 10, 10) if ds.class_names[label] == "a" else (10, 200, 10)
        assert np.abs(image.reshape(-1, 3).mean(0) - expected).max() < 2
    device_cut = crop(np.zeros((120, 160, 3)), RoiConfig(name="r", x=0.5, y=0.0, width=0.5,
                                                          height=1.0))
    assert device_cut.shape == (120, 80, 3)


def test_trainer_refuses_a_region_outside_the_image():
    from .conftest import run_cli

    r = run_cli("train", "--data", "nowhere", "--out", "x", "--roi", "0.8,0,0.5,1",
                module="host_training")
    assert r.returncode == 2 and "inside the image" in r.stderr
