"""Events carry what the note is worth when the bundle says it (manifest denominations)."""

from __future__ import annotations

import json
import shutil

import pytest

from device.bundle import write_manifest
from device.money import denominations, from_labels
from device.tools.synthetic import write_sequence

from .conftest import ROOT, Recorder, write_config

DEMO = ROOT / "compiled_models" / "demo-notes"


def test_denominations_from_labels_and_checked_against_them():
    assert from_labels(["50000_vnd", "0.5_eur", "background", "note_5"]) == {
        "50000_vnd": {"value": 50000, "currency": "VND"},
        "0.5_eur": {"value": 0.5, "currency": "EUR"}}
    got = denominations({"denominations": {"a": {"value": 5, "currency": "EUR"}}}, ["a"])
    assert got["a"].value == 5 and got["a"].currency == "EUR"
    assert denominations({}, ["a"]) == {}
    with pytest.raises(ValueError, match="does not have"):
        denominations({"denominations": {"b": {"value": 5, "currency": "EUR"}}}, ["a"])
    with pytest.raises(ValueError, match="currency"):
        denominations({"denominations": {"a": {"value": 5, "currency": "euro"}}}, ["a"])


def test_events_carry_value_and_currency(tmp_path, broker, daemon_factory):
    bundle = tmp_path / "priced"
    shutil.copytree(DEMO, bundle)
    m = json.loads((bundle / "manifest.json").read_text())
    m.pop("files")
    m["denominations"] = {"note_5": {"value": 5, "currency": "EUR"},
                          "note_10": {"value": 10, "currency": "EUR"}}
    write_manifest(bundle, m)
    replay = tmp_path / "replay"
    write_sequence(replay, ["note_5", "note_20", "note_10"], gap=4, frames_per_object=5, seed=2)
    cfg = write_config(tmp_path / "m.toml",
                       camera={"type": "replay", "source": str(replay), "fps": 40, "loop": False},
                       model={"path": str(bundle), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "money-1"},
                       decision={"mode": "event"})
    rec = Recorder(broker.port, "coral-classifier/money-1/event")
    try:
        d = daemon_factory(cfg)
        assert d.proc.wait(60) == 0, d.output()
        rec.wait_for(lambda r: len(r.on("/event")) >= 3, 15, "three events")
        got = [(e["label"], e["value"], e["currency"]) for e in rec.json_on("/event")]
        assert got == [("note_5", 5, "EUR"), ("note_20", None, None), ("note_10", 10, "EUR")]
    finally:
        rec.close()
