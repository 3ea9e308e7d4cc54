"""Back to training, end to end: a real daemon captures and a person labels frames, `make
collect` pulls them over a real sshd + rsync into class folders (merging, never
overwriting), and coral-train's several --data folders are one dataset whose sources are
counted by device."""

from __future__ import annotations

import json
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from host_training.train.dataset import data_sources, load_dataset, union_folder

from .conftest import PYTHON, ROOT, Recorder
from .test_deploy import sshd  # noqa: F401 (the fixture: a real sshd on a free port)
from .webutil import get_json, http, wait_until, web_daemon


def collect(sshd, remote, out, *extra):  # noqa: F811
    return subprocess.run(
        [PYTHON, "-m", "host_training.fleet.collect", "--host", sshd["host"], "--ssh-opts",
         sshd["opts"], "--remote", str(remote), "--out", str(out), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_capture_label_collect_and_train_sources(tmp_path, broker, daemon_factory,
                                                 sshd):  # noqa: F811
    rec = Recorder(broker.port, "coral-classifier/pi-web/#")
    try:
        _d, url, state = web_daemon(tmp_path, broker.port, daemon_factory, web={})
        wait_until(lambda: get_json(url + "/api/live")["seq"], 30, "frames")
        rec.client.publish("coral-classifier/pi-web/cmd/capture", json.dumps(
            {"label": "_unlabelled", "frames": 4, "every": 0.1}), qos=1).wait_for_publish(5)
        unl = state / "dataset" / "_unlabelled"
        wait_until(lambda: len(list(unl.glob("*.jpg"))) == 4, 20, "4 captured frames")
        ids = [f["id"] for f in get_json(url + "/api/frames")["frames"]]
        assert len(ids) == 4
        # a person labels three on the page and rejects one
        status, _, body = http(url + "/api/frames", {"action": "label", "ids": ids[:3],
                                                     "label": "note_5"})
        assert status == 200, body
        assert http(url + "/api/frames", {"action": "reject", "ids": ids[3:]})[0] == 200
    finally:
        rec.close()
    remote = state / "dataset"
    out = tmp_path / "data"
    # an existing dataset with a same-named, different frame: both must survive
    first = sorted((remote / "note_5").glob("*.jpg"))[0]
    (out / "note_5").mkdir(parents=True)
    older = cv2.imencode(".jpg", np.full((30, 30, 3), 77, np.uint8))[1].tobytes()
    (out / "note_5" / first.name).write_bytes(older)
    (out / "empty").mkdir()
    cv2.imwrite(str(out / "empty" / "slot.png"), np.zeros((40, 40, 3), np.uint8))

    r = collect(sshd, remote, out)
    assert r.returncode == 0, r.stderr
    assert "3 frame(s)" in r.stdout and "1 renamed" in r.stdout
    got = sorted(p.name for p in (out / "note_5").glob("*.jpg"))
    assert len(got) == 4 and first.name in got  # 3 pulled + the older one, renamed beside
    assert (out / "note_5" / first.name).read_bytes() == older
    assert not (out / "_rejected").exists() and not (out / "_unlabelled").exists()
    assert not (out / ".model").exists()
    # a second run adds nothing and overwrites nothing
    r = collect(sshd, remote, out)
    assert r.returncode == 0 and "0 frame(s)" in r.stdout and "3 already there" in r.stdout
    assert len(list((out / "note_5").glob("*.jpg"))) == 4

    # coral-train --data data/ --data original/: one dataset, sources counted by device
    original = tmp_path / "original"
    for label in ("note_5", "empty"):
        (original / label).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(original / label / f"{i}.png"), np.full((40, 40, 3), i, np.uint8))
    sources = data_sources([out, original])
    assert sources[str(out)] == {"(not from a device)": 1, "pi-web": 4}
    assert sources[str(original)] == {"(not from a device)": 4}
    union = union_folder([out, original], tmp_path / "union")
    ds = load_dataset(union, 32)
    assert ds.counts() == {"empty": 3, "note_5": 6} and not ds.skipped


def test_collect_explains_an_unreachable_device(tmp_path, sshd):  # noqa: F811
    r = collect(sshd, tmp_path / "no-such-folder", tmp_path / "out")
    assert r.returncode != 0 and "rsync from" in r.stderr and "REMOTE=" in r.stderr


def test_make_collect_needs_a_host():
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    r = subprocess.run(["make", "-s", "collect"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "usage: make collect HOST=" in r.stdout


@pytest.mark.train
def test_train_on_two_data_folders_reports_devices(tmp_path):
    pytest.importorskip("tensorflow", reason="coral-train needs TensorFlow (a workstation)")
    from device.tools.synthetic import write_dataset

    from .conftest import run_cli

    original = write_dataset(tmp_path / "original", per_class=8, seed=3)
    field = write_dataset(tmp_path / "field", per_class=4, seed=4)
    for f in field.rglob("*.png"):  # frames saved on a device are named <device>__...
        f.rename(f.with_name(f"vend-7__{f.name}"))
    out = tmp_path / "bundle"
    r = run_cli("train", "--data", str(field), "--data", str(original), "--out", str(out),
                "--input-size", "32", "--alpha", "0.35", "--weights", "none", "--epochs", "2",
                "--fine-tune-epochs", "0", "--feature-copies", "0",
                "--representative-count", "20", "--max-int8-drop", "100", "--no-compile",
                module="host_training", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    n_classes = len(list(original.iterdir()))
    assert f"training images: {4 * n_classes:6d} from vend-7" in r.stdout
    assert f"training images: {8 * n_classes:6d} from (not from a device)" in r.stdout
    sources = json.loads((out / "data_sources.json").read_text())
    assert sources == {str(field): {"vend-7": 4 * n_classes},
                       str(original): {"(not from a device)": 8 * n_classes}}
    assert "## Training images by source" in (out / "report.md").read_text()
