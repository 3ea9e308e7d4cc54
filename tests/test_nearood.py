"""Near-OOD in the trainer: leave-one-denomination-out on frozen features, the fixed split of
real notes that are not ours, and --refuse (notes learned in order to refuse them)."""

import cv2
import numpy as np

from device.bundle import load_bundle
from device.tools import synthetic
from host_training.openset import nearood
from host_training.openset.other_notes import EVAL, TRAIN, load_other, split_part
from host_training.train.evaluate import evaluate_model

from .conftest import run_cli

NAMES = ["a", "b", "c", "near", "background"]


def _features(rng, per=60, d=32):
    """Four classes as feature clusters; `near` lies close to a (an untaught note that looks
    like a taught one), background far from all."""
    centres = np.random.default_rng(7).normal(0, 1, (3, d)) * 4
    near = centres[0] + np.random.default_rng(8).normal(0, 1, d) * 0.5
    bg = np.random.default_rng(9).normal(0, 1, d) * 4 + 12
    groups = [*centres, near, bg]
    x = np.concatenate([c + rng.normal(0, 0.7, (per, d)) for c in groups]).astype(np.float32)
    return x, np.repeat(np.arange(len(groups)), per)


def test_lodo_measures_the_left_out_class_and_keeps_near_and_far_apart():
    rng = np.random.default_rng(0)
    x, y = _features(rng)
    vx, vy = _features(rng, per=20)
    r = nearood.lodo([x], y, vx, vy, NAMES, ["background"], ["background"], 0.99, 0.005)
    assert set(r["folds"]) == {"a", "b", "c", "near"}  # background is never left out
    f = r["folds"]
    # a note that looks like a taught one is taken for it; a distinct one much less
    assert f["near"]["left_out_accepted"] > 0.5 > f["c"]["left_out_accepted"]
    assert set(f["near"]["taken_for"]) == {"a"}
    assert f["c"]["others_accepted_right"] > 0.8
    assert f["c"]["far_accepted"] == 0.0 and f["c"]["n_negatives"] == 20  # far, apart
    for kind in nearood.SCORES:
        assert 0 <= f["c"]["scores"][kind]["auroc"] <= 1
    assert r["mean"]["worst_left_out_accepted"] == max(v["left_out_accepted"] for v in f.values())
    table = "\n".join(nearood.section(r))
    assert "| near | 20 |" in table and "Far" in table


def test_lodo_warns_when_the_reject_path_is_unmeasured():
    rng = np.random.default_rng(1)
    x, y = _features(rng, per=10)
    one = np.isin(y, [0, 4])  # a single known class and background
    r = nearood.lodo([x[one]], y[one], x[one], y[one], NAMES, ["background"],
                     ["background"], 0.99, 0.005)
    assert r["folds"] == {} and "unmeasured" in r["warning"]
    two = np.isin(y, [0, 1])  # two classes, no negatives: without one, one class remains
    r = nearood.lodo([x[two]], y[two], x[two], y[two], NAMES, ["background"],
                     ["background"], 0.99, 0.005)
    assert r["folds"] == {} and "unmeasured" in r["warning"]
    assert "unmeasured" in nearood.summary(r)


def test_other_notes_split_is_fixed_by_denomination(tmp_path):
    img = np.full((20, 30, 3), 128, np.uint8)
    files = ["irr/toman_100/x.jpg", "irr/toman_200/y.jpg", "irr/toman_500/z.jpg",
             "irr/toman_500/z2.jpg", "eur/5.jpg", "eur/10__2.jpg", "eur/20-50.jpg",
             "vnd-phone/1000_vnd/a.jpg", "vnd-phone/100000_vnd/b.jpg"]
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / f), img)
    irr = [100, 200, 500]
    assert [split_part(f, irr) for f in files[:4]] == [TRAIN, EVAL, TRAIN, TRAIN]
    assert [split_part(f, [5, 10, 20]) for f in files[4:7]] == [TRAIN, EVAL, TRAIN]
    o = load_other(tmp_path, 16, known=["100000_vnd"], parts=(EVAL,))
    assert o.paths == {"irr/eval": ["irr/toman_200/y.jpg"], "eur/eval": ["eur/10__2.jpg"],
                       "vnd-phone/untaught": ["vnd-phone/1000_vnd/a.jpg"],
                       "vnd-phone/known": ["vnd-phone/100000_vnd/b.jpg"]}
    assert o.array("irr/eval", 16).shape == (1, 16, 16, 3)


def test_refuse_trains_the_classes_and_the_bundle_never_accepts_them(tmp_path):
    """A single taught class, a refused one and negatives: it trains, lists the refused
    class in the manifest, never accepts it, and warns that near-OOD is unmeasured."""
    data = synthetic.write_dataset(tmp_path / "data", 16, seed=1, classes=("note_5",))
    single = run_cli("train", "--data", str(data), "--out", str(tmp_path / "s"), "--weights",
                     "none", module="host_training")
    assert single.returncode == 2 and "--negatives" in single.stderr  # says what to do
    refuse = synthetic.write_dataset(tmp_path / "refuse", 16, seed=2, classes=("note_20",))
    negs = synthetic.write_dataset(tmp_path / "negs", 16, seed=3, classes=("empty",))
    out = tmp_path / "b"
    r = run_cli("train", "--data", str(data), "--refuse", str(refuse), "--negatives", str(negs),
                "--out", str(out), "--input-size", "32", "--alpha", "0.35", "--weights",
                "none", "--fine-tune-epochs", "2", "--representative-count", "10",
                "--max-int8-drop", "100", "--no-compile", module="host_training", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m = load_bundle(out).manifest
    assert m["labels"] == ["note_20", "note_5", "background"]
    assert m["decision"]["refused_labels"] == ["note_20"]
    assert "note_20" not in m["decision"]["class_thresholds"]
    assert "unmeasured" in r.stderr and "near (leave-one-denomination-out)" in r.stdout
    held = synthetic.write_dataset(tmp_path / "held", 8, seed=4, classes=("note_20",))
    res = evaluate_model(out, held)
    assert res["n"] == 8 and not any(res["accepted"])
    assert res["lodo"]["folds"] == {} and "unmeasured" in res["lodo"]["warning"]
    # the same class in --data and --refuse: one line saying what to do
    bad = run_cli("train", "--data", str(data), "--refuse", str(data), "--out",
                  str(tmp_path / "x"), "--weights", "none", module="host_training")
    assert bad.returncode == 2 and "in --data and in --refuse" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_loso_names_what_each_class_is_taken_for():
    """Per held-out series, each class's most frequent wrong answers (the 500,000 <-> 100,000
    confusion a new camera brings): here series b's 'c2' frames look like 'c0'."""
    from host_training.openset import calibrate

    rng = np.random.default_rng(0)
    names = ["c0", "c1", "c2"]
    centres = np.eye(3, 8) * 4
    labels = np.repeat([0, 1, 2], 40)
    series = np.array(["a", "b"] * 60)
    feats = centres[labels] + rng.normal(0, 0.3, (120, 8))
    shifted = labels.copy()
    shifted[(series == "b") & (labels == 2)] = 0  # series b's c2 photos look like c0
    test = centres[shifted] + rng.normal(0, 0.3, (120, 8))
    out = calibrate.loso([feats], labels, series, ["frame"] * 120, test, labels, series, names)
    b = out["b"]["per_class"]
    assert b["c2"]["recall"] < 0.2 and b["c2"]["taken_for"] == {"c0": b["c2"]["n"] - round(
        b["c2"]["recall"] * b["c2"]["n"])}
    assert b["c0"]["taken_for"] == {} and b["c0"]["recall"] == 1.0
