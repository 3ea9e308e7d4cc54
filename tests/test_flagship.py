"""The committed flagship bundle, checked on the shared banknote photos, and (slow) the
recipe itself on the real dataset."""

import json

import pytest

from device.bundle import load_bundle

from .conftest import ROOT, SHARED, need_shared, run_cli

BUNDLE = ROOT / "compiled_models" / "banknotes-vnd"
DATA = SHARED / "datasets" / "banknotes-vnd"


def test_flagship_bundle_is_complete_and_attributed():
    bundle = load_bundle(BUNDLE)  # every sha256
    assert len(bundle.labels) == 6 and all(lbl.endswith("_vnd") for lbl in bundle.labels)
    m = bundle.manifest
    assert m["input"]["width"] == 224 and m["metrics"]["int8"]["accuracy"] >= 0.95
    assert m["edgetpu_check"]["cpu_ops"] == 0
    attribution = (BUNDLE / "README.dataset.txt").read_text()
    assert "CC BY 4.0" in attribution
    assert len(m["golden"]) == 6


def test_flagship_accuracy_on_the_validation_photos():
    need_shared(DATA / "valid")
    r = run_cli("evaluate", "--model", str(BUNDLE), "--data", str(DATA / "valid"), "--json",
                module="host_training")
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)
    assert result["n"] == 245
    assert result["accuracy"] >= 0.95, result["per_class"]
    assert min(c["recall"] for c in result["per_class"].values()) >= 0.85


@pytest.mark.slow
def test_flagship_recipe_short_run(tmp_path):
    """The real recipe on the real photos, shortened: ImageNet weights, cached-feature head,
    two fine-tuning epochs, int8 within the 2-point margin."""
    need_shared(DATA / "train", SHARED / "weights" / "keras")
    out = tmp_path / "banknotes"
    r = run_cli("train", "--data", str(DATA / "train"), "--val-data", str(DATA / "valid"),
                "--out", str(out), "--feature-copies", "1", "--epochs", "10",
                "--fine-tune-epochs", "2", "--no-compile", module="host_training", timeout=3600,
                env={"KERAS_HOME": str(SHARED / "weights" / "keras")})
    assert r.returncode == 0, r.stderr[-3000:]
    m = load_bundle(out).manifest["metrics"]
    assert m["int8"]["accuracy"] >= 0.85 and m["agreement"] >= 0.95
