"""The reject path: device.openset's judge() and the manifest's decision section, the
trainer's calibration, open-world samples (boxes, mined negatives, series) and augmentation,
and a real training run with negatives and boxes on generated notes."""

import json

import cv2
import numpy as np
import pytest

from device.bundle import load_bundle
from device.openset import (
    OodRule,
    OperatingPoint,
    Verdict,
    fallback_point,
    model_outputs,
    operating_point,
)
from device.policy import judge
from device.tools import synthetic
from host_training.openset import calibrate
from host_training.train.augment import augment, augment_batch, paste
from host_training.train.dataset import DatasetError
from host_training.train.report import series_section
from host_training.train.samples import (
    BACKGROUND,
    CROP,
    JIGSAW,
    MINED,
    Box,
    jigsaw,
    mine,
    read_boxes,
    series_by_class,
    series_of,
)
from host_training.train.settings import Augment

from .conftest import run_cli

LABELS = ("note_10", "note_20", "note_5", "background")


def outs(scores, sims=None):
    o = [np.asarray(scores, np.float32)]
    if sims is not None:
        o.append(np.asarray(sims, np.float32))
    return o


# -- judge() -------------------------------------------------------------------------------

def test_judge_accepts_only_a_confident_known_class():
    point = OperatingPoint(threshold=0.7, class_thresholds={"note_5": 0.9},
                           background_labels=["background"])
    v = judge(point, LABELS, outs([0.8, 0.1, 0.05, 0.05]))
    assert v == Verdict("note_10", pytest.approx(0.8), True, None, "accepted")
    assert not judge(point, LABELS, outs([0.65, 0.3, 0.0, 0.05])).accepted  # below 0.7
    v = judge(point, LABELS, outs([0.05, 0.05, 0.85, 0.05]))  # note_5 needs 0.9
    assert (v.label, v.accepted, v.reason) == ("note_5", False, "below_threshold")
    assert judge(point, LABELS, outs([0.05, 0.05, 0.95, 0.0])).accepted


def test_background_and_unknown_are_never_accepted():
    point = OperatingPoint(threshold=0.1, background_labels=["background"],
                           unknown_labels=["note_20"])
    v = judge(point, LABELS, outs([0.0, 0.0, 0.0, 1.0]))
    assert (v.label, v.accepted, v.reason) == ("background", False, "background")
    v = judge(point, LABELS, outs([0.0, 1.0, 0.0, 0.0]))
    assert (v.accepted, v.reason) == (False, "unknown")


def test_class_mean_ood_rule_reads_the_second_output():
    rule = OodRule(kind="class_mean_cosine", threshold=0.3, output=1,
                   class_thresholds={"note_20": 0.1})
    point = OperatingPoint(threshold=0.5, background_labels=["background"], ood=rule)
    assert point.outputs_needed == 2
    near = judge(point, LABELS, outs([0.9, 0.1, 0, 0], [0.8, 0.2, 0.1, 0.1]))
    assert near.accepted and near.ood_score == pytest.approx(0.2)
    far = judge(point, LABELS, outs([0.9, 0.1, 0, 0], [0.5, 0.9, 0.1, 0.1]))
    assert (far.accepted, far.reason) == (False, "out_of_distribution")
    assert far.ood_score == pytest.approx(0.5)  # the top-1 class's similarity, not the max
    # per-class OOD threshold: 0.2 passes note_10's 0.3 but not note_20's 0.1
    assert not judge(point, LABELS, outs([0.1, 0.9, 0, 0], [0.1, 0.8, 0.1, 0.1])).accepted
    with pytest.raises(ValueError, match="output 1"):
        judge(point, LABELS, outs([0.9, 0.1, 0, 0]))


def test_max_softmax_rule_and_bad_outputs():
    point = OperatingPoint(threshold=0.5, ood=OodRule(kind="max_softmax", threshold=0.2))
    assert point.outputs_needed == 1
    v = judge(point, LABELS, outs([0.75, 0.25, 0, 0]))
    assert (v.accepted, v.reason, v.ood_score) == (False, "out_of_distribution",
                                                   pytest.approx(0.25))
    assert judge(point, LABELS, outs([0.85, 0.15, 0, 0])).accepted
    with pytest.raises(ValueError, match="3 scores for 4 labels"):
        judge(point, LABELS, outs([0.5, 0.5, 0]))


def test_operating_point_from_manifest():
    assert operating_point({"name": "old"}) is None  # older bundles still load
    assert model_outputs({}) == ["scores"]
    d = {"threshold": 0.6, "class_thresholds": {"note_5": 0.8}, "background_labels": ["bg"],
         "unknown_labels": [], "refused_labels": ["note_1000"],
         "ood": {"kind": "class_mean_cosine", "threshold": 0.4,
                                       "class_thresholds": {}, "output": 1}}
    p = operating_point({"decision": d, "outputs": ["scores", "similarity"]})
    assert p.model_dump(mode="json") == d  # the manifest holds exactly these fields
    with pytest.raises(ValueError, match=r"decision\.threshlod"):
        operating_point({"decision": {"threshlod": 0.5}})
    with pytest.raises(ValueError, match=r"decision\.ood\.kind"):
        operating_point({"decision": {"ood": {"kind": "energy", "threshold": 1}}})
    with pytest.raises(ValueError, match="starting with 'scores'"):
        model_outputs({"outputs": ["similarity", "scores"]})
    fb = fallback_point(("a", "empty", "Other"))
    assert fb.threshold == 0.7 and fb.background_labels == ["empty"]
    assert fb.unknown_labels == ["Other"] and fb.ood is None


# -- calibration ---------------------------------------------------------------------------

def test_class_thresholds_hold_the_false_accept_target():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 4, n)  # 3 = background
    scores = np.full((n, 4), 0.02, np.float32)
    scores[np.arange(n), y] = rng.uniform(0.7, 0.99, n)
    # 20 background frames taken for note_10 at 0.6 .. 0.85
    bad = np.flatnonzero(y == 3)[:20]
    scores[bad] = 0.02
    scores[bad, 0] = np.linspace(0.6, 0.85, 20)
    sims = np.where(scores > 0.5, 0.9, 0.3).astype(np.float32)
    point = calibrate.calibrate([scores, sims], y, LABELS, ["background"], [], "none", 0.99,
                                max_false_accept=0.01)
    t = point.class_thresholds["note_10"]
    accepted_wrong = ((scores[:, 0] >= t) & (y != 0) & (scores.argmax(1) == 0)).sum()
    assert accepted_wrong <= 0.01 * (y != 0).sum()
    assert 0.6 < t <= 0.86 and point.class_thresholds["note_20"] == calibrate.MIN_CLASS_THRESHOLD
    assert "background" not in point.class_thresholds and point.ood is None
    report = calibrate.decision_report(calibrate.judge_all(point, LABELS, [scores, sims]), y,
                                       LABELS, ["background"])
    assert report["false_accept"] <= 0.05 and report["accepted_wrong"] == 0.0
    assert report["confusion"]["columns"][-1] == calibrate.REJECTED
    assert sum(map(sum, report["confusion"]["matrix"])) == n


def test_ood_threshold_keeps_the_requested_share_of_notes():
    rng = np.random.default_rng(1)
    n = 300
    y = rng.integers(0, 3, n)
    scores = np.full((n, 4), 0.01, np.float32)
    scores[np.arange(n), y] = 0.97
    sims = np.zeros((n, 4), np.float32)
    sims[np.arange(n), y] = rng.uniform(0.5, 1.0, n)
    point = calibrate.calibrate([scores, sims], y, LABELS, ["background"], [],
                                "class_mean_cosine", 0.9, 0.005)
    v = calibrate.judge_all(point, LABELS, [scores, sims])
    kept = np.mean([x.accepted for x in v])
    assert 0.87 <= kept <= 0.93, kept
    assert point.ood.kind == "class_mean_cosine" and point.ood.output == 1


def test_score_keep_adds_the_top1_score_rule_on_top_of_the_ood_rule():
    """Notes the cosine lets through but the network is unsure of (an untaught note close to
    a known one) are refused by the score rule; off (1.0), the thresholds are as before."""
    rng = np.random.default_rng(2)
    n = 300
    y = rng.integers(0, 3, n)
    scores = np.full((n, 4), 0.0, np.float32)
    scores[np.arange(n), y] = rng.integers(205, 256, n) / 256  # int8 steps, as on a device
    sims = np.zeros((n, 4), np.float32)
    sims[np.arange(n), y] = 0.95  # every note passes the cosine rule
    kw = dict(labels=LABELS, background=["background"], unknown=[], kind="class_mean_cosine",
              keep=0.99, max_false_accept=0.005)
    off = calibrate.calibrate([scores, sims], y, **kw)
    on = calibrate.calibrate([scores, sims], y, **kw, score_keep=0.9)
    assert set(off.class_thresholds.values()) == {calibrate.MIN_CLASS_THRESHOLD}
    top1 = scores[np.arange(n), y]
    floor = np.quantile(top1, 0.1)
    assert all(floor - 1e-4 <= t <= floor for t in on.class_thresholds.values())
    assert on.ood == off.ood  # the OOD rule itself is unchanged
    accepted = np.array([v.accepted for v in calibrate.judge_all(on, LABELS, [scores, sims])])
    assert 0.88 <= accepted.mean() <= 0.92, accepted.mean()
    # every note that reaches the floor is kept: thresholds are rounded down, never up
    assert accepted[top1 >= floor].all() and not accepted[top1 < floor - 1e-4].any()
    # int8 scores saturate at 255/256 = 0.99609375: a floor there must not become 0.9961
    sat = scores.copy()
    sat[np.arange(n), y] = np.where(np.arange(n) < 10, 0.85, 255 / 256)
    point = calibrate.calibrate([sat, sims], y, **kw, score_keep=0.9)
    assert all(v.accepted for v in calibrate.judge_all(point, LABELS, [sat, sims])[10:])


# -- samples -------------------------------------------------------------------------------

def test_series_from_file_names():
    assert series_of("010000_100_png.rf.6c2c.jpg") == "webcam"
    assert series_of("IMG_5712_jpg.rf.abc.jpg") == "table"
    assert series_of("IMG_5316-Copy_jpg.rf.abc.jpg") == "table"
    assert series_of("20250210_111952_018_jpg.rf.92.jpg") == "hand"
    assert series_of("photo.jpg") == "other"


def test_a_series_that_holds_one_class_is_named_as_a_shortcut():
    names = ["100000_vnd", "10000_vnd", "50000_vnd"]
    # the banknote dataset's shape: a phone series of one note, webcam frames of every note
    series = ["hand"] * 150 + ["webcam"] * 90 + ["table"] * 10
    labels = [0] * 150 + [0, 1, 2] * 30 + [1] * 10
    frames, warnings = series_by_class(series, labels, names)
    assert frames["hand"] == {"100000_vnd": 150}
    assert frames["webcam"] == {"100000_vnd": 30, "10000_vnd": 30, "50000_vnd": 30}
    assert len(warnings) == 1 and "'hand' is 100% 100000_vnd (150 frames)" in warnings[0]
    # a few frames are not a series worth warning about; one class everywhere is no shortcut
    assert series_by_class(["a"] * 5 + ["b"] * 6, [0] * 5 + [1] * 6, names)[1] == []
    assert series_by_class(["a"] * 30 + ["b"] * 30, [0] * 60, names)[1] == []
    report = series_section({"frames": frames, "warnings": warnings})
    assert "| hand | 150 | 0 | 0 |" in report and any("**Warning**" in ln for ln in report)


def _note_frames(root, per_class, seed):
    """Generated frames of the synthetic notes with their true boxes (CSV rows)."""
    rng = np.random.default_rng(seed)
    rows = ["split,label,file,x_center,y_center,width,height"]
    for label in synthetic.NOTES:
        d = root / label
        d.mkdir(parents=True)
        for i in range(per_class):
            w, h = 160, 120
            img = synthetic._background(rng, w, h)
            note, mask = synthetic._note(rng, label, w, h)
            img = np.clip(img * (1 - mask) + note * mask, 0, 255).astype(np.uint8)
            ys, xs = np.nonzero(mask[..., 0] > 0.5)
            x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
            name = f"{label}_{seed}_{i}.png"
            cv2.imwrite(str(d / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            rows.append(f"train,{label},{name},{(x0 + x1) / 2 / w:.5f},{(y0 + y1) / 2 / h:.5f},"
                        f"{(x1 - x0) / w:.5f},{(y1 - y0) / h:.5f}")
    return rows


def test_boxes_crops_and_mined_negatives(tmp_path):
    rows = _note_frames(tmp_path / "data", 3, seed=1)
    (tmp_path / "boxes.csv").write_text("\n".join(rows) + "\n")
    boxes = read_boxes(tmp_path / "boxes.csv")
    assert len(boxes) == 9
    paths = tuple(str(p) for p in sorted((tmp_path / "data").rglob("*.png")))
    labels = np.array([list(synthetic.NOTES).index(p.split("/")[-2]) for p in paths])
    pool = mine(paths, labels, boxes, 48, background=3, seed=0)
    kinds = np.array(pool.kinds)
    # one negative per frame, unless the (tilted) note fills most of it
    assert (kinds == CROP).sum() == 9 and 7 <= (kinds == MINED).sum() <= 9
    assert (kinds == JIGSAW).sum() == 4  # every second crop
    crop_labels = np.array(pool.labels)[kinds == CROP]
    assert sorted(crop_labels.tolist()) == sorted(labels.tolist())
    assert set(np.array(pool.labels)[kinds != CROP]) == {3}
    # a crop is mostly note (saturated colour); a mined negative mostly grey slot
    sat = [cv2.cvtColor(im, cv2.COLOR_RGB2HSV)[..., 1].mean() for im in pool.images]
    sat = np.array(sat)
    assert sat[kinds == CROP].mean() > 2 * sat[kinds == MINED].mean()
    assert all(a > 1.2 for a, k in zip(pool.aspects, pool.kinds, strict=True) if k == CROP)
    # a note filling the frame leaves no scene: no negative rather than the note itself
    full = {name: [Box(0.5, 0.5, 0.95, 0.9)] for name in boxes}
    pool = mine(paths, labels, full, 48, background=3, seed=0)
    assert MINED not in pool.kinds and pool.kinds.count(CROP) == 9


def test_bad_boxes_file(tmp_path):
    f = tmp_path / "b.csv"
    f.write_text("file,x,y\na.jpg,1,2\n")
    with pytest.raises(DatasetError, match="needs a header"):
        read_boxes(f)
    f.write_text("file,x_center,y_center,width,height\na.jpg,0.5,0.5,2,0.3\n")
    with pytest.raises(DatasetError, match="YOLO-normalised"):
        read_boxes(f)
    assert Box(0.5, 0.5, 0.5, 0.5).pixels(100, 100) == (25, 25, 75, 75)


def test_jigsaw_keeps_colours_and_breaks_layout():
    img = np.zeros((60, 60, 3), np.uint8)
    img[:20] = 255  # a white top band
    out = jigsaw(img, np.random.default_rng(0))
    assert out.shape == img.shape
    assert abs(out.mean() - img.mean()) < 3
    assert not np.array_equal(out, img)


def test_augmentation_changes_pixels_but_not_shape():
    rng = np.random.default_rng(0)
    img = np.full((64, 64, 3), 128, np.uint8)
    img[16:48, 8:56] = (200, 40, 40)
    out = augment(img, Augment(), rng)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).mean() > 2
    none = Augment(rotation=0, rot90=False, zoom=0, translate=0, brightness=0, contrast=0,
                   perspective=0, white_balance=0, glare=0, blur=0, noise=0, jpeg=0)
    assert np.array_equal(augment(img, none, rng), img)
    bg = np.zeros((64, 64, 3), np.uint8)
    note = np.full((64, 64, 3), (200, 40, 40), np.uint8)
    pasted = paste(note, 2.0, bg, rng)  # lands on black at its 2:1 aspect, 55-95 % wide
    red = (pasted[..., 0] > 150) & (pasted[..., 1] < 90)
    assert 0.12 < red.mean() < 0.5
    batch = augment_batch(np.stack([img, img]), none, rng, ["crop", "frame"],
                          np.array([2.0, 0.0]), bg[None])
    assert batch.shape == (2, 64, 64, 3)


# -- a real run with negatives and boxes ----------------------------------------------------

@pytest.fixture(scope="module")
def open_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("open")
    rows = _note_frames(root / "data", 24, seed=2)
    rows += _note_frames(root / "val", 6, seed=3)[1:]
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    neg = root / "negatives"
    rng = np.random.default_rng(4)
    neg.mkdir()
    for i in range(24):  # empty slots, noise and stripes: anything that is not a note
        img = (synthetic.render("empty", rng) if i % 3 == 0 else
               rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) if i % 3 == 1 else
               np.tile(np.linspace(0, 255, 160, dtype=np.uint8)[None, :, None], (120, 1, 3)))
        cv2.imwrite(str(neg / f"n{i}.png"), img)
    out = root / "bundle"
    r = run_cli("train", "--data", str(root / "data"), "--val-data", str(root / "val"),
                "--negatives", str(neg), "--boxes", str(root / "boxes.csv"),
                "--out", str(out), "--input-size", "48", "--alpha", "0.35",
                "--weights", "none", "--fine-tune-epochs", "20", "--epoch-samples", "256",
                "--patience", "20", "--batch-size", "16", "--representative-count", "100",
                "--max-int8-drop", "25", "--version", "0.0.1", module="host_training",
                timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"root": root, "out": out, "stderr": r.stderr, "stdout": r.stdout}


def test_bundle_has_a_background_class_and_a_decision(open_bundle):
    bundle = load_bundle(open_bundle["out"])
    m = bundle.manifest
    assert bundle.labels[-1] == BACKGROUND
    assert m["outputs"] == ["scores", "similarity"]
    point = operating_point(m)
    assert point.background_labels == [BACKGROUND] and point.ood.kind == "class_mean_cosine"
    assert set(point.class_thresholds) == set(synthetic.NOTES)
    assert m["dataset"]["pool"]["crop"] == 72 and m["dataset"]["pool"]["negative"] >= 18
    assert m["edgetpu_check"]["cpu_ops"] == 0, m["edgetpu_check"]  # similarity head too
    assert "no reject path" not in open_bundle["stderr"]
    report = (open_bundle["out"] / "report.md").read_text()
    assert "## Open world" in report and "(rejected)" in report
    assert (open_bundle["out"] / "operating_curves.png").is_file()


def test_int8_outputs_are_scores_then_similarity(open_bundle):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(open_bundle["out"] / "model_quant.tflite"))
    o = it.get_output_details()
    assert len(o) == 2 and all(d["dtype"] == np.uint8 for d in o)
    assert o[0]["quantization"] == (pytest.approx(1 / 256), 0)  # the softmax
    assert list(o[1]["shape"]) == [1, 4]


def test_classify_json_reports_accepted(open_bundle):
    val = open_bundle["root"] / "val"
    notes = sorted(val.rglob("*.png"))
    rng = np.random.default_rng(11)
    empties = [open_bundle["root"] / f"empty{i}.png" for i in range(3)]
    for f in empties:  # slots with nothing in them: the background class
        cv2.imwrite(str(f), synthetic.render("empty", rng))
    r = run_cli("classify", "--model", str(open_bundle["out"]), "--backend", "cpu", "--json",
                *map(str, notes), *map(str, empties))
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == len(notes) + 3
    assert all(isinstance(x["accepted"], bool) and x["ood_score"] is not None for x in lines)
    right = [x["accepted"] and x["label"] == x["image"].split("/")[-2] for x in lines[:-3]]
    assert np.mean(right) >= 0.3, [(x["label"], x["score"], x["reason"]) for x in lines]
    point = operating_point(load_bundle(open_bundle["out"]).manifest)
    for x in lines:  # the daemon's rule, nothing else
        passes = (x["score"] >= point.class_thresholds.get(x["label"], point.threshold)
                  and x["ood_score"] <= point.ood.threshold and x["label"] != BACKGROUND)
        assert x["accepted"] == passes, x
    assert sum(not x["accepted"] for x in lines[-3:]) >= 2, lines[-3:]
    assert "no decision section" not in r.stderr


def test_evaluate_applies_the_operating_point(open_bundle):
    root = open_bundle["root"]
    r = run_cli("evaluate", "--model", str(open_bundle["out"]), "--data", str(root / "val"),
                "--negatives", str(root / "negatives"), "--json", module="host_training")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["has_decision"] and res["n"] == 18
    d = res["decision"]
    assert d["accepted_right"] + d["accepted_wrong"] + d["rejected_notes"] == pytest.approx(1)
    assert len(res["accepted"]) == 18
    assert res["negatives"]["n_negatives"] == 24
    assert res["negatives"]["false_accept"] <= 0.25  # it trained on most of them


def test_retune_tightens_a_bundle_without_retraining(open_bundle, tmp_path):
    """`coral-train retune`: the same network, every class threshold raised to the top-1
    score the asked share of correct validation notes reaches, none lowered, the OOD rule
    kept; the new bundle sealed, re-measured, and decided by the device with its point."""
    import shutil

    root, src = open_bundle["root"], open_bundle["out"]
    before = load_bundle(src).manifest
    assert before["training"]["settings"]["score_keep"] == 0.95  # the trainer's default
    untouched = (src / "manifest.json").read_bytes()
    out = tmp_path / "retuned"
    r = run_cli("retune", "--model", str(src), "--val-data", str(root / "val"),
                "--score-keep", "0.6", "--out", str(out), "--version", "0.0.2",
                "--negatives", str(root / "negatives"), module="host_training")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (src / "manifest.json").read_bytes() == untouched  # the source is left alone
    b = load_bundle(out)
    m, old, new = b.manifest, operating_point(before), operating_point(b.manifest)
    assert m["version"] == "0.0.2" and b.sha256 == load_bundle(src).sha256  # same network
    s = m["retuned"]
    assert s["from_version"] == "0.0.1" and s["score_keep"] == 0.6
    assert new.ood == old.ood
    for lb, t in new.class_thresholds.items():
        assert t >= old.class_thresholds.get(lb, old.threshold)
        assert t >= s["score_floor"] or t == 0.999
    assert s["changed"], "0.6 of the correct notes kept must raise some threshold"
    assert s["validation"]["accepted_right"] < s["validation_before"]["accepted_right"]
    assert m["open_set"]["validation"]["ours"]["accepted_right"] == \
        s["validation"]["accepted_right"]
    report = (out / "report.md").read_text()
    assert report.startswith(f"# {m['name']} v0.0.2") and "retuned (from v0.0.1)" in report
    # the device decides with the new thresholds, nothing else
    notes = sorted((root / "val").rglob("*.png"))
    c = run_cli("classify", "--model", str(out), "--backend", "cpu", "--json",
                *map(str, notes))
    assert c.returncode == 0, c.stderr[-2000:]
    for x in map(json.loads, c.stdout.splitlines()):
        passes = (x["score"] >= new.class_thresholds.get(x["label"], new.threshold)
                  and x["ood_score"] <= new.ood.threshold and x["label"] != BACKGROUND)
        assert x["accepted"] == passes, x
    # in place: the bundle is swapped only once the new one is sealed
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    r = run_cli("retune", "--model", str(copy), "--val-data", str(root / "val"), "--out",
                str(copy), module="host_training")
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_bundle(copy).version == "0.0.1+score0.95"
    assert not list(tmp_path.glob(".copy*"))  # no half-written bundle left beside it
    # retuned twice: one retune section in the report, the version not stacked
    r = run_cli("retune", "--model", str(copy), "--val-data", str(root / "val"), "--out",
                str(copy), "--score-keep", "0.9", module="host_training")
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_bundle(copy).version == "0.0.1+score0.9"
    assert (copy / "report.md").read_text().count("## Operating point retuned") == 1
    # bad input: one line naming what to do
    for args, says in ((["--model", str(src / "model_quant.tflite")], "bundle folder"),
                       (["--model", str(src), "--score-keep", "1.5"], "between 0.5 and 1"),
                       (["--model", str(src), "--val-data", str(root / "negatives")],
                        "no class subfolders"),
                       (["--model", str(tmp_path / "nothing")], "not found"),
                       (["--model", str(src), "--out", str(src / "labels.txt")],
                        "is a file")):
        if "--val-data" not in args:
            args += ["--val-data", str(root / "val")]
        if "--out" not in args:
            args += ["--out", str(tmp_path / "x")]
        bad = run_cli("retune", *args, module="host_training")
        assert bad.returncode == 2 and says in bad.stderr and "Traceback" not in bad.stderr, \
            bad.stderr[-1500:]
    assert not (tmp_path / "x").exists()


def test_plain_dataset_warns_it_has_no_reject_path(tmp_path):
    data = synthetic.write_dataset(tmp_path / "data", per_class=10, seed=5,
                                   classes=("note_5", "note_10"))
    r = run_cli("train", "--data", str(data), "--out", str(tmp_path / "b"), "--input-size", "32",
                "--alpha", "0.35", "--weights", "none", "--fine-tune-epochs", "1",
                "--representative-count", "10", "--max-int8-drop", "100",
                module="host_training", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no reject path" in r.stderr
    m = load_bundle(tmp_path / "b").manifest
    assert m["decision"]["background_labels"] == [] and m["labels"] == ["note_10", "note_5"]
