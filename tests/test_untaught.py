"""Whole-recipe near-OOD: a bundle trained without some classes meets their photos
(`coral-train train --leave-out`, `coral-train evaluate --untaught`)."""

import json

import numpy as np

from device.bundle import load_bundle
from device.openset import OodRule, OperatingPoint
from device.tools import synthetic
from host_training.openset import untaught

from .conftest import run_cli

LABELS = ["a", "b", "background"]


def _outputs(rng, top: np.ndarray, conf: np.ndarray, cos: np.ndarray) -> list[np.ndarray]:
    """Softmax rows with `conf` on `top`, and a cosine output with `cos` on `top`."""
    n = len(top)
    probs = np.full((n, 3), 0.0, np.float32)
    sims = rng.uniform(0.0, 0.2, (n, 3)).astype(np.float32)
    for i, (t, c, s) in enumerate(zip(top, conf, cos, strict=True)):
        probs[i] = (1 - c) / 2
        probs[i, t] = c
        sims[i, t] = s
    return [probs, sims]


def _tiny(negs) -> list[str]:
    """Options for a tiny, fast training (no pretrained weights, one fine-tuning epoch)."""
    return ["--negatives", str(negs), "--input-size", "32", "--alpha", "0.35", "--weights",
            "none", "--fine-tune-epochs", "1", "--representative-count", "10",
            "--max-int8-drop", "100", "--no-compile", "--no-loso"]


def test_measure_counts_what_untaught_notes_are_taken_for_and_the_cost_of_refusing_them():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    # known notes: confident and close to their class means (cosine 0.75-0.99)
    val = _outputs(rng, y, np.full(200, 0.95), rng.uniform(0.75, 0.99, 200))
    # untaught notes: 20 taken for `a`, confidently, and less similar (cosine 0.6-0.9)
    bad = _outputs(rng, np.zeros(20, int), np.full(20, 0.95), np.linspace(0.6, 0.9, 20))
    point = OperatingPoint(threshold=0.6, class_thresholds={"a": 0.6, "b": 0.6},
                           background_labels=["background"],
                           ood=OodRule(kind="class_mean_cosine", threshold=0.5, output=1))
    fig = untaught.measure(point, LABELS, val, y, bad, ["c"] * 20, 0.005)
    assert fig["untaught"]["c"] == {"n": 20, "accepted": 1.0, "taken_for": {"a": 20}}
    assert fig["validation"]["accepted_right"] == 1.0 and fig["validation"]["n_notes"] == 200
    assert 0.5 < fig["auroc"]["class_mean_cosine"] < 1
    assert [r["keep"] for r in fig["curve"]] == list(untaught.CURVE_KEEPS)
    # refusing the untaught notes costs known ones: fewer accepted as fewer are kept
    assert fig["curve"][0]["untaught_accepted"] > fig["curve"][-1]["untaught_accepted"]
    assert fig["curve"][0]["accepted_right"] > fig["curve"][-1]["accepted_right"]
    k = fig["keep_for_target"]
    assert k["untaught_accepted"] <= untaught.TARGET and k["keep"] < 0.99
    assert f"class_mean_cosine reaches it keeping {k['keep']:.2f}" in untaught.summary(fig)
    assert set(fig["other_rules"]) == {"max_softmax", untaught.BOTH}
    assert "max_softmax" in untaught.summary(fig)
    assert "| c | 20 | 100.0 % | a 20 |" in "\n".join(untaught.section(fig, ["c"]))
    # without validation outputs: the untaught figures alone, and a hint for the curve
    alone = untaught.measure(point, LABELS, None, None, bad, ["c"] * 20, 0.005)
    assert alone["validation"] is None and "--val-data" in untaught.summary(alone)


def test_both_scores_refuse_what_each_alone_lets_through():
    """Two kinds of untaught note, as on the whole-recipe folds: one the network is sure of
    but unlike its class mean (the cosine refuses it), one like the class mean but unsure
    (max-softmax refuses it). Each rule alone lets one kind through; both refuse both."""
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 100)
    val = _outputs(rng, y, rng.uniform(0.9, 0.996, 200), rng.uniform(0.8, 0.99, 200))
    sure = _outputs(rng, np.zeros(20, int), np.full(20, 0.99), np.full(20, 0.6))
    unsure = _outputs(rng, np.ones(20, int), np.full(20, 0.8), np.full(20, 0.95))
    bad = [np.r_[a, b] for a, b in zip(sure, unsure, strict=True)]
    point = OperatingPoint(threshold=0.6, background_labels=["background"],
                           ood=OodRule(kind="class_mean_cosine", threshold=0.5, output=1))
    fig = untaught.measure(point, LABELS, val, y, bad, ["c"] * 20 + ["d"] * 20, 0.005)
    at95 = {r: next(p for p in c if p["keep"] == 0.95) for r, c in
            [(fig["rule"], fig["curve"])] + [(k, o["curve"]) for k, o in
                                              fig["other_rules"].items()]}
    assert at95["class_mean_cosine"]["untaught_accepted"] == 0.5  # the unsure kind
    assert at95["max_softmax"]["untaught_accepted"] == 0.5  # the sure kind
    assert at95[untaught.BOTH]["untaught_accepted"] == 0.0
    assert at95[untaught.BOTH]["accepted_right"] >= 0.89  # at most ~5 % + ~5 % handed back


def test_leave_out_trains_without_the_class_and_measures_its_photos(tmp_path):
    classes = ("note_5", "note_10", "note_20")
    data = synthetic.write_dataset(tmp_path / "data", 12, seed=1, classes=classes)
    val = synthetic.write_dataset(tmp_path / "val", 5, seed=2, classes=classes)
    negs = synthetic.write_dataset(tmp_path / "negs", 12, seed=3, classes=("empty",))
    out = tmp_path / "fold"
    common = _tiny(negs)
    bad = run_cli("train", "--data", str(data), "--leave-out", "note_50", "--out",
                  str(tmp_path / "x"), *common, module="host_training")
    assert bad.returncode == 2 and "--leave-out note_50: no such class" in bad.stderr
    assert "Traceback" not in bad.stderr
    r = run_cli("train", "--data", str(data), "--val-data", str(val), "--leave-out", "note_20",
                "--out", str(out), *common, module="host_training", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    b = load_bundle(out)  # every file, untaught.json and the appended report included, sealed
    assert list(b.labels) == ["note_10", "note_5", "background"]
    fig = json.loads((out / "untaught.json").read_text())
    assert fig["untaught"]["note_20"]["n"] == 12 + 5  # its --data and --val-data photos
    assert set(fig["untaught"]["note_20"]["taken_for"]) <= {"note_10", "note_5"}
    assert fig["validation"]["n_notes"] == 10  # the taught classes' validation photos only
    assert b.manifest["open_set"]["untaught"] == fig
    assert "## Whole recipe, never taught: note_20" in (out / "report.md").read_text()
    assert "never taught (whole recipe)" in r.stdout
    # evaluate measures a bundle alone; a folder holding a known class is refused
    (tmp_path / "untaught").mkdir()
    (tmp_path / "untaught" / "note_20").symlink_to(data / "note_20")
    ev = run_cli("evaluate", "--model", str(out), "--untaught", str(tmp_path / "untaught"),
                 "--json", module="host_training")
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert json.loads(ev.stdout)["untaught"]["untaught"]["note_20"]["n"] == 12
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "note_5").symlink_to(data / "note_5")
    ev = run_cli("evaluate", "--model", str(out), "--untaught", str(tmp_path / "mixed"),
                 module="host_training")
    assert ev.returncode == 2 and "ones the model knows" in ev.stderr


def test_leave_out_series_trains_without_it_and_measures_its_photos(tmp_path):
    """Half of each class's photos become a second series (phone photos IMG_NNNN.jpg); a
    bundle trained without it meets exactly those photos, per class."""
    import cv2

    from host_training.cli.train import SERIES
    from host_training.train.samples import series_of

    assert {series_of(n) for n in ("a.png", "IMG_1.jpg", "20250210_111952_018.jpg",
                                   "x.jpg")} == set(SERIES)
    classes = ("note_5", "note_10")
    data = synthetic.write_dataset(tmp_path / "data", 12, seed=1, classes=classes)
    negs = synthetic.write_dataset(tmp_path / "negs", 12, seed=3, classes=("empty",))
    for c in classes:
        for i, f in enumerate(sorted((data / c).glob("*.png"))[:4]):
            cv2.imwrite(str(data / c / f"IMG_{i:04d}.jpg"), cv2.imread(str(f)))
            f.unlink()
    common = _tiny(negs)
    bad = run_cli("train", "--data", str(data), "--leave-out-series", "hand", "--out",
                  str(tmp_path / "x"), *common, module="host_training")
    assert bad.returncode == 2 and "no photo of that series" in bad.stderr
    out = tmp_path / "fold"
    r = run_cli("train", "--data", str(data), "--leave-out-series", "table", "--out", str(out),
                *common, module="host_training", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    b = load_bundle(out)
    fig = json.loads((out / "held_out.json").read_text())
    assert fig["series"] == "table" and fig["n"] == 8  # the 4 IMG_ photos of each class
    assert {c: v["n"] for c, v in fig["per_class"].items()} == {"note_5": 4, "note_10": 4}
    for v in fig["per_class"].values():
        assert v["accepted_right"] + v["accepted_wrong"] <= 1
        assert sum(v["taken_for"].values()) == round(v["accepted_wrong"] * v["n"])
    assert b.manifest["open_set"]["held_out_series"] == fig
    assert "## Whole recipe, an unseen photo series: table" in (out / "report.md").read_text()
    assert "unseen series table (whole recipe): 8 photos" in r.stdout
    # the series was not trained on: 8 training photos per class became 6 after the split
    assert b.manifest["training"]["settings"]["data"] != str(data)
