"""Refused notes end to end, the way a bill validator works: the bundle knows a note in
order to refuse it (decision.refused_labels, from `coral-train train --refuse`), or the
operator switches a known note off (`decision.accept`, per region too). Either gives a
`refused` event with its class, counted per class, distinct from `unknown` and from the
empty slot; the web page shows it; Home Assistant counts it."""

from __future__ import annotations

import json
import shutil

import pytest

from device.bundle import write_manifest
from device.tools.synthetic import write_sequence

from .conftest import ROOT, Recorder, write_config
from .webutil import get_json, wait_until

DEMO = ROOT / "compiled_models" / "demo-notes"
PASSES = ["note_5", "note_20", "note_10", "note_20"]


def refusing_bundle(tmp_path):
    """demo-notes whose operating point refuses note_20 (as --refuse would write it)."""
    bundle = tmp_path / "refusing"
    shutil.copytree(DEMO, bundle)
    m = json.loads((bundle / "manifest.json").read_text())
    m.pop("files")
    m["decision"] = {"threshold": 0.6, "background_labels": ["empty"],
                     "refused_labels": ["note_20"]}
    write_manifest(bundle, m)
    return bundle


def run_events(tmp_path, broker, daemon_factory, model, name, **sections):
    replay = tmp_path / f"replay-{name}"
    write_sequence(replay, PASSES, gap=4, frames_per_object=5, seed=3)
    cfg = write_config(tmp_path / f"{name}.toml",
                       camera={"type": "replay", "source": str(replay), "fps": 40,
                               "loop": False},
                       model={"path": str(model), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": name},
                       state={"dir": str(tmp_path / f"state-{name}")}, **sections)
    rec = Recorder(broker.port, f"coral-classifier/{name}/#")
    try:
        d = daemon_factory(cfg)
        assert d.proc.wait(60) == 0, d.output()
        rec.wait_for(lambda r: r.json_on("/status")[-1]["state"] == "stopped", 15, "stop")
        return rec.json_on("/event"), rec.json_on("/counts")[-1]
    finally:
        rec.close()


@pytest.mark.parametrize("how", ["bundle", "accept_list", "region_accept_list"])
def test_refused_notes_give_refused_events_counted_per_class(tmp_path, broker,
                                                             daemon_factory, how):
    model, sections = DEMO, {"decision": {"mode": "event"}}
    if how == "bundle":
        model = refusing_bundle(tmp_path)
    elif how == "accept_list":
        sections["decision"]["accept"] = ["note_5", "note_10"]
    else:
        sections["[camera.roi]"] = {"name": "slot", "x": 0.0, "y": 0.0, "width": 1.0,
                                    "height": 1.0, "accept": ["note_5", "note_10"]}
    events, counts = run_events(tmp_path, broker, daemon_factory, model, f"ref-{how[:6]}",
                                **sections)
    assert [(e["label"], e["verdict"]) for e in events] == [
        ("note_5", "accepted"), ("note_20", "refused"), ("note_10", "accepted"),
        ("note_20", "refused")], events
    reasons = {e["reason"] for e in events if e["verdict"] == "refused"}
    assert reasons == ({"refused"} if how == "bundle" else {"not_in_accept_list"})
    total = counts["counts"]
    assert total == {"note_5": 1, "note_10": 1, "refused:note_20": 2}, counts
    if how == "region_accept_list":
        assert counts["by_roi"] == {"slot": total}
        assert all(e["roi"] == "slot" for e in events)


def test_a_bundle_without_refused_labels_decides_as_before(tmp_path, broker, daemon_factory):
    events, counts = run_events(tmp_path, broker, daemon_factory, DEMO, "ref-none",
                                decision={"mode": "event"})
    assert [(e["label"], e["verdict"]) for e in events] == [
        ("note_5", "accepted"), ("note_20", "accepted"), ("note_10", "accepted"),
        ("note_20", "accepted")]
    assert counts["counts"] == {"note_5": 1, "note_20": 2, "note_10": 1}


def test_refused_on_the_web_page_and_in_home_assistant(tmp_path, broker, daemon_factory):
    """The page lists the refused event as refused; discovery gives a refused counter that
    is not a note type, and note_20 is no accepted event type."""
    from device.tools.demo import free_port, wait_port

    port = free_port()
    replay = tmp_path / "replay"
    write_sequence(replay, PASSES, gap=4, frames_per_object=5, seed=3)
    cfg = write_config(tmp_path / "web.toml",
                       camera={"type": "replay", "source": str(replay), "fps": 20,
                               "loop": True},
                       model={"path": str(refusing_bundle(tmp_path)), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "ref-web"},
                       decision={"mode": "event"}, homeassistant={"enabled": True},
                       web={"enabled": True, "address": "127.0.0.1", "port": port})
    rec = Recorder(broker.port, "homeassistant/#")
    try:
        daemon_factory(cfg)
        wait_port(port, 60)
        url = f"http://127.0.0.1:{port}/"
        page = wait_until(lambda: [e for e in get_json(url + "api/events")["events"]
                                   if e["verdict"] == "refused"], 60, "a refused event")
        assert page[0]["label"] == "note_20" and page[0]["explanation"]
        rec.wait_for(lambda r: any("/count_refused/" in t for t, _, _ in r.messages), 30,
                     "the refused counter")
        configs = {t: json.loads(p) for t, p, _ in rec.messages if p and "ref_web" in t}
        decision = next(c for t, c in configs.items() if t.endswith("/decision/config"))
        assert "note_20" not in decision["event_types"] and "refused" in \
            decision["event_types"]
        assert not any("count_note_20" in t for t in configs)
    finally:
        rec.close()
