"""One decision path: the bundle's operating point, the config's keys and a region's,
resolved once into a Policy; judge() is the only function that decides a frame."""

import numpy as np
import pytest

from device.config import DecisionConfig
from device.openset import OperatingPoint
from device.policy import DecisionEngine, Policy, judge, resolve_policy
from device.regions import RoiConfig

LABELS = ("note_5", "note_10", "note_1000", "empty")
BUNDLE = OperatingPoint(threshold=0.6, class_thresholds={"note_5": 0.9},
                        background_labels=["empty"], refused_labels=["note_1000"])


def outs(scores):
    return [np.asarray(scores, np.float32)]


def roi(**kw):
    return RoiConfig(name="slot", x=0, y=0, width=1, height=1, **kw)


def test_the_bundle_decides_where_the_config_sets_nothing():
    p = resolve_policy(BUNDLE, DecisionConfig())
    assert (p.threshold, dict(p.class_thresholds), p.background_labels, p.refused_labels,
            p.accept) == (0.6, {"note_5": 0.9}, {"empty"}, {"note_1000"}, None)
    # a bundle without a decision section: the config's defaults, as before
    assert resolve_policy(OperatingPoint(), DecisionConfig()).threshold == 0.7


def test_a_config_threshold_is_for_every_class_unless_it_sets_class_thresholds_too():
    p = resolve_policy(BUNDLE, DecisionConfig(threshold=0.95))
    assert p.threshold == 0.95 and dict(p.class_thresholds) == {}
    p = resolve_policy(BUNDLE, DecisionConfig(threshold=0.95, class_thresholds={"note_10": 0.5}))
    assert dict(p.class_thresholds) == {"note_10": 0.5}


def test_a_region_overrides_the_config_and_the_bundle():
    p = resolve_policy(BUNDLE, DecisionConfig(accept=("note_5", "note_10")),
                       roi(threshold=0.99, accept=("note_10",)))
    assert p.threshold == 0.99 and dict(p.class_thresholds) == {} and p.accept == {"note_10"}
    p = resolve_policy(BUNDLE, DecisionConfig(), roi(class_thresholds={"note_10": 0.8}))
    assert dict(p.class_thresholds) == {"note_5": 0.9, "note_10": 0.8}


@pytest.mark.parametrize("scores, verdict, reason", [
    ([0.95, 0.05, 0, 0], "accepted", "accepted"),
    ([0.85, 0.15, 0, 0], "unknown", "below_threshold"),  # note_5 needs 0.9 in this bundle
    ([0.05, 0.05, 0.9, 0], "refused", "refused"),  # learned in order to refuse it
    ([0.2, 0.2, 0.5, 0.1], "unknown", "below_threshold"),  # refused needs confidence too
    ([0, 0, 0.05, 0.95], "empty", "background"),
])
def test_judge_reasons(scores, verdict, reason):
    v = judge(resolve_policy(BUNDLE), LABELS, outs(scores))
    assert (v.verdict, v.reason) == (verdict, reason)
    assert v.accepted == (verdict == "accepted") and v.explanation


def test_accept_list_refuses_a_known_class_and_margin_makes_close_calls_unknown():
    p = resolve_policy(BUNDLE, DecisionConfig(accept=("note_5",), margin=0.3))
    v = judge(p, LABELS, outs([0.05, 0.9, 0.05, 0]))
    assert (v.verdict, v.reason, v.label) == ("refused", "not_in_accept_list", "note_10")
    v = judge(p, LABELS, outs([0.92, 0.08, 0, 0]))
    assert v.accepted
    p = Policy(threshold=0.4, margin=0.2)
    assert judge(p, LABELS, outs([0.5, 0.45, 0, 0.05])).reason == "margin"


def test_engine_resolves_once_per_model_and_region():
    class Model:
        sha256, labels, point = "a" * 64, LABELS, BUNDLE

    engine = DecisionEngine(DecisionConfig(), [roi(threshold=0.99)])
    assert engine.policy(Model, "slot") is engine.policy(Model, "slot")
    assert engine.policy(Model, "").threshold == 0.6
    # the same frame: accepted for the whole frame, not in the strict region
    frame = outs([0.05, 0.95, 0, 0])
    assert engine.judge(Model, "", frame).accepted
    assert engine.judge(Model, "slot", frame).reason == "below_threshold"


def test_a_retuned_bundle_is_judged_by_its_own_point_though_its_network_is_the_same():
    """`coral-train retune` keeps the network (same sha256) and raises the thresholds: after
    a reload the engine must not keep the old bundle's cached policy."""
    class Old:
        sha256, labels, point = "a" * 64, LABELS, BUNDLE

    class Retuned:
        sha256, labels = Old.sha256, LABELS
        point = BUNDLE.model_copy(update={"class_thresholds": {"note_5": 0.9,
                                                               "note_10": 0.96}})

    engine = DecisionEngine(DecisionConfig())
    frame = outs([0.02, 0.95, 0, 0.03])
    assert engine.judge(Old, "", frame).accepted
    assert engine.judge(Retuned, "", frame).reason == "below_threshold"
    assert engine.judge(Old, "", frame).accepted  # a frame of the old model still in flight
    assert engine.policy(Retuned, "") is engine.policy(Retuned, "")  # still cached
