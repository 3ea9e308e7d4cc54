"""The daemon decides with the bundle's operating point (its manifest `decision` section)
unless the config or a region sets a key itself; a bundle without one still loads. Stream
results and events come from the same verdicts (device.policy.judge)."""

from __future__ import annotations

import json
import shutil

import pytest

from device.bundle import write_manifest
from device.tools.synthetic import write_sequence

from .conftest import ROOT, Recorder, write_config

DEMO = ROOT / "compiled_models" / "demo-notes"


def test_daemon_events_follow_the_bundles_class_thresholds(tmp_path, broker,
                                                           daemon_factory):
    """note_20 needs an unreachable 1.01 in this bundle's operating point: its pass becomes
    an `unknown` event (the background class is set by the bundle too), the others stay
    values."""
    bundle = tmp_path / "strict"
    shutil.copytree(DEMO, bundle)
    m = json.loads((bundle / "manifest.json").read_text())
    m.pop("files")
    m["decision"] = {"threshold": 0.6, "class_thresholds": {"note_20": 1.01},
                     "background_labels": ["empty"], "unknown_labels": []}
    write_manifest(bundle, m)
    replay = tmp_path / "replay"
    passes = ["note_5", "note_20", "note_10"]
    write_sequence(replay, passes, gap=4, frames_per_object=5, seed=11)
    cfg = write_config(tmp_path / "op.toml",
                       camera={"type": "replay", "source": str(replay), "fps": 50,
                               "loop": False},
                       model={"path": str(bundle), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "op-1"},
                       decision={"mode": "event"})  # no thresholds here: the bundle's rule
    rec = Recorder(broker.port, "coral-classifier/op-1/event")
    try:
        d = daemon_factory(cfg)
        assert d.proc.wait(60) == 0, d.output()
        rec.wait_for(lambda r: len(r.on("/event")) >= 3, 10, "three events")
        assert [e["label"] for e in rec.json_on("/event")] == ["note_5", "unknown", "note_10"]
    finally:
        rec.close()


def _run(tmp_path, broker, daemon_factory, name, mode, replay, **sections):
    cfg = write_config(tmp_path / f"{name}.toml",
                       camera={"type": "replay", "source": str(replay), "fps": 50,
                               "loop": False},
                       model={"path": str(DEMO), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": name},
                       decision={"mode": mode, **sections.pop("decision", {})},
                       state={"dir": str(tmp_path / f"state-{name}")}, **sections)
    rec = Recorder(broker.port, f"coral-classifier/{name}/#")
    try:
        d = daemon_factory(cfg)
        assert d.proc.wait(60) == 0, d.output()
        topic = "/result" if mode == "stream" else "/event"
        rec.wait_for(lambda r: r.json_on("/status")[-1]["state"] == "stopped", 15, "stopped")
        return rec.json_on(topic)
    finally:
        rec.close()


@pytest.mark.parametrize("override", ["config", "region"])
def test_a_config_or_region_threshold_decides_results_and_events_alike(
        tmp_path, broker, daemon_factory, override):
    """note_20 needs an unreachable 1.0 (uint8 scores top out at 255/256): in stream mode
    no note_20 frame is `accepted`, in event mode its pass is an `unknown` event with
    note_20 as the guess; the other notes are accepted on both surfaces."""
    replay = tmp_path / "replay"
    write_sequence(replay, ["note_5", "note_20", "note_10"], gap=4, frames_per_object=5,
                   seed=11)
    strict = {"note_20": 1.0}
    if override == "config":
        sections = {"decision": {"class_thresholds": strict}}
    else:  # [[camera.roi]]: write_config's table name "[camera.roi]" gives the array form
        sections = {"[camera.roi]": {"name": "slot", "x": 0.0, "y": 0.0, "width": 1.0,
                                     "height": 1.0, "class_thresholds": strict}}
    results = _run(tmp_path, broker, daemon_factory, f"s-{override}", "stream", replay,
                   **sections)
    events = _run(tmp_path, broker, daemon_factory, f"e-{override}", "event", replay,
                  **sections)
    by_label = {}
    for r in results:
        by_label.setdefault(r["label"], set()).add((r["accepted"], r["verdict"]))
    assert by_label["note_20"] == {(False, "unknown")}, by_label
    assert (True, "accepted") in by_label["note_5"] and (True, "accepted") in by_label["note_10"]
    assert [(e["label"], e["verdict"], e["guess"]) for e in events] == [
        ("note_5", "accepted", None), ("unknown", "unknown", "note_20"),
        ("note_10", "accepted", None)]
    assert events[1]["reason"] == "below_threshold"



def test_a_reloaded_bundle_with_the_same_network_and_new_thresholds_decides_anew(
        tmp_path, broker, daemon_factory):
    """What `coral-train retune` ships: the same model file (same sha256), a stricter
    operating point. After a reload (SIGHUP, as `make deploy` and systemd's ExecReload
    send) the note_20 passes that were values must become `unknown` events."""
    import signal

    bundle = tmp_path / "bundle"
    shutil.copytree(DEMO, bundle)
    m = json.loads((bundle / "manifest.json").read_text())
    m.pop("files")

    def point(note_20: float) -> None:
        m["decision"] = {"threshold": 0.6, "class_thresholds": {"note_20": note_20},
                         "background_labels": ["empty"], "unknown_labels": []}
        write_manifest(bundle, m)

    point(0.6)
    replay = tmp_path / "replay"
    write_sequence(replay, ["note_20"], gap=3, frames_per_object=4, seed=11)
    cfg = write_config(tmp_path / "re.toml",
                       camera={"type": "replay", "source": str(replay), "fps": 40,
                               "loop": True},
                       model={"path": str(bundle), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "re-1"},
                       decision={"mode": "event"})
    rec = Recorder(broker.port, "coral-classifier/re-1/#")
    try:
        d = daemon_factory(cfg)
        rec.wait_for(lambda r: len(r.on("/event")) >= 2, 60, "note_20 events")
        assert {e["label"] for e in rec.json_on("/event")} == {"note_20"}
        point(1.01)  # retuned: the same network, note_20 now out of reach
        reloads = d.output().count("reloaded: now")
        d.proc.send_signal(signal.SIGHUP)
        rec.wait_for(lambda r: d.output().count("reloaded: now") > reloads, 30, "the reload")
        n = len(rec.on("/event"))
        rec.wait_for(lambda r: any(e["label"] == "unknown" for e in r.json_on("/event")[n:]),
                     60, "an unknown event after the reload")
        later = len(rec.on("/event"))
        rec.wait_for(lambda r: len(r.on("/event")) >= later + 2, 60, "two more events")
        assert {e["label"] for e in rec.json_on("/event")[later:]} == {"unknown"}
    finally:
        rec.close()
