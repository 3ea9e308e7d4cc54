"""The daemon decides with the bundle's operating point (its manifest `decision` section)
unless the config sets a key itself; a bundle without one still loads."""

from __future__ import annotations

import json
import shutil

from device.bundle import write_manifest
from device.config import DecisionConfig
from device.daemon.status import decision_rules
from device.tools.synthetic import write_sequence

from .conftest import ROOT, Recorder, write_config

DEMO = ROOT / "compiled_models" / "demo-notes"


class Spec:
    def __init__(self, decision):
        self.manifest_decision = decision


def test_config_keys_override_the_bundle_only_where_set():
    bundle = {"threshold": 0.9, "class_thresholds": {"note_5": 0.99},
              "background_labels": ["empty"], "unknown_labels": ["other"]}
    r = decision_rules(DecisionConfig(), Spec(bundle))
    assert (r.threshold, r.class_thresholds, r.background_labels, r.unknown_labels) == \
        (0.9, {"note_5": 0.99}, ("empty",), ("other",))
    r = decision_rules(DecisionConfig(threshold=0.5), Spec(bundle))
    assert r.threshold == 0.5 and r.class_thresholds == {"note_5": 0.99}
    r = decision_rules(DecisionConfig(), Spec(None))  # no decision section
    assert r.threshold == 0.7 and r.background_labels == ()


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
