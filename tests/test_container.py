"""The container route: the image `make container` builds (container/Dockerfile) runs the
real daemon as the service user, reaching a real mosquitto, with models on a volume.
Building takes minutes and a package mirror, so this runs when the image exists."""

import json
import os
import platform
import shutil
import subprocess
import time

import pytest

from .conftest import ROOT, Recorder
from .test_deploy import DEMO

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
IMAGE = f"localhost/coral-classifier:{ARCH}"
ENV = {**os.environ, "STORAGE_DRIVER": os.environ.get("STORAGE_DRIVER", "vfs"),
       "BUILDAH_ISOLATION": os.environ.get("BUILDAH_ISOLATION", "chroot")}


def test_dockerfile_matches_the_systemd_route():
    text = (ROOT / "container" / "Dockerfile").read_text()
    for needle in ("/opt/coral-classifier/venv", "--system-site-packages",
                   "/var/lib/coral-classifier/models", "coral-classifier-deploy",
                   "video,plugdev,apex", "constraints-pi.txt", "LIBEDGETPU_DEB", "TFLITE_WHEEL",
                   "USER coral-classifier", "python3-cryptography"):
        assert needle in text, needle


def test_the_image_runs_the_daemon(tmp_path, broker):
    if not shutil.which("buildah"):
        pytest.skip("buildah is not installed (apt-get install buildah)")
    if subprocess.run(["buildah", "inspect", IMAGE], capture_output=True, env=ENV).returncode:
        pytest.skip(f"no {IMAGE}: build it with `make container` (container/build.sh)")
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(DEMO, models / "v0")
    (models / "current").symlink_to("v0")
    from device.tools.synthetic import write_sequence

    write_sequence(tmp_path / "replay", ["note_5", "note_10"], gap=2, frames_per_object=3)
    (tmp_path / "dev.toml").write_text(
        '[camera]\ntype = "replay"\nsource = "/replay"\nfps = 5\n'
        '[model]\npath = "/var/lib/coral-classifier/models/current"\nbackend = "cpu"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ndevice_id = "ctr-1"\n'
        'status_interval = 1.0\n[state]\ndir = "/var/lib/coral-classifier"\n')
    for p in [tmp_path, *tmp_path.rglob("*")]:
        p.chmod(0o777 if p.is_dir() else 0o666)  # the image's service user writes state
    ctr = subprocess.run(["buildah", "from", IMAGE], capture_output=True, text=True, env=ENV,
                         check=True).stdout.strip()
    rec = Recorder(broker.port, "coral-classifier/ctr-1/#")
    proc = subprocess.Popen(
        ["buildah", "run", "-v", f"{tmp_path / 'dev.toml'}:/etc/coral-classifier/dev.toml:ro",
         "-v", f"{models}:/var/lib/coral-classifier/models", "-v",
         f"{tmp_path / 'replay'}:/replay:ro", ctr, "--", "coral-classifier", "run",
         "--config", "/etc/coral-classifier/dev.toml"], env=ENV,
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "daemon.log").open("w"))
    try:
        rec.wait_for(lambda r: any(json.loads(p)["state"] == "running" and json.loads(p)["fps"]
                                   > 0 for p in r.on("/status")), 120, "status from the image")
        assert b"online" in rec.on("/availability")
        status = rec.json_on("/status")[-1]
        assert status["backend"] == "cpu" and status["model"]["name"] == "demo-notes"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        rec.close()
        time.sleep(0.5)
        subprocess.run(["buildah", "rm", ctr], capture_output=True, env=ENV)
