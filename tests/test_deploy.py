"""`make deploy` for real, over ssh to this machine: an sshd on a free loopback port with a
throwaway key, a temporary device root, and the daemon serving from models/current."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from device.bundle import write_manifest

from .conftest import PYTHON, ROOT, Recorder, free_port, wait_port, write_config

DEMO = ROOT / "compiled_models" / "demo-notes"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not Path(SSHD).exists() or not shutil.which("rsync"):
        pytest.fail("openssh-server and rsync are needed: `make test` installs them")
    d = tmp_path_factory.mktemp("ssh")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host")],
                   check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "id")],
                   check=True)
    shutil.copy(d / "id.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nPidFile {d / 'pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "PermitRootLogin prohibit-password\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=(d / "sshd.log").open("w"))
    wait_port(port)
    opts = (f"-p {port} -i {d / 'id'} -o StrictHostKeyChecking=no -o BatchMode=yes "
            "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")
    user = os.environ.get("USER") or "root"
    yield {"host": f"{user}@127.0.0.1", "opts": opts}
    proc.terminate()
    proc.wait(5)


def variant(src: Path, dest: Path, version: str, tag: bytes) -> Path:
    """A valid bundle with a different model sha256: the flatbuffer's description string is
    rewritten in place (same length), so the network itself is untouched."""
    shutil.copytree(src, dest)
    model = dest / "model_quant.tflite"
    data = model.read_bytes()
    marker = b"MLIR Converted."
    assert marker in data
    model.write_bytes(data.replace(marker, marker[: -len(tag)] + tag, 1))
    import json

    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["version"] = version
    manifest.pop("files")
    write_manifest(dest, manifest)
    return dest


@pytest.fixture
def device(tmp_path, broker, daemon_factory):
    """A device root with models/v0 (the demo bundle) serving through models/current."""
    root = tmp_path / "device"
    (root / "models").mkdir(parents=True)
    shutil.copytree(DEMO, root / "models" / "v0")
    (root / "models" / "current").symlink_to("v0")
    replay = tmp_path / "replay"
    from device.tools.synthetic import write_sequence

    write_sequence(replay, ["note_5", "note_10"], gap=2, frames_per_object=3)
    cfg = write_config(tmp_path / "dev.toml",
                       camera={"type": "replay", "source": str(replay), "fps": 20, "loop": True},
                       model={"path": str(root / "models" / "current"), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "dev-1",
                             "status_interval": 0.5})
    rec = Recorder(broker.port, "coral-classifier/dev-1/#")
    d = daemon_factory(cfg)
    rec.wait_for(lambda r: len(r.on("/result")) >= 3, 60, "results from v0")
    yield {"root": root, "daemon": d, "rec": rec, "port": broker.port}
    rec.close()


def deploy(sshd, device, *args, command="deploy", reload_cmd=None, timeout=30):
    pid = device["daemon"].proc.pid
    return subprocess.run(
        [PYTHON, "-m", "host_training.deploy", command, "--host", sshd["host"], "--ssh-opts",
         sshd["opts"], "--root", str(device["root"]), "--device-id", "dev-1",
         "--reload-cmd", reload_cmd or f"kill -HUP {pid}",
         "--broker", f"127.0.0.1:{device['port']}", "--timeout", str(timeout), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=180)


def served_sha(rec) -> str:
    return rec.json_on("/status")[-1]["model"]["sha256"]


def still_classifying(device) -> None:
    rec, d = device["rec"], device["daemon"]
    n = len(rec.on("/result"))
    rec.wait_for(lambda r: len(r.on("/result")) > n + 3, 10, "results keep flowing")
    assert d.proc.poll() is None


def test_deploy_then_rollback(tmp_path, sshd, device):
    new = variant(DEMO, tmp_path / "v1", "1.1.0", b"!")
    from device.bundle import load_bundle

    sha = load_bundle(new).sha256
    r = deploy(sshd, device, "--model", str(new), "--allow-cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    rec = device["rec"]
    assert served_sha(rec) == sha
    rec.wait_for(lambda r: r.json_on("/result")[-1]["model"]["sha256"] == sha, 10,
                 "results carry the new sha256")
    models = device["root"] / "models"
    assert os.readlink(models / "current") == f"1.1.0-{sha[:12]}"
    assert os.readlink(models / "previous") == "v0"
    assert not list(models.glob("*.partial"))
    still_classifying(device)

    r = deploy(sshd, device, command="rollback")
    assert r.returncode == 0, r.stderr[-3000:]
    old = load_bundle(DEMO).sha256
    rec.wait_for(lambda r: served_sha(r) == old, 10, "old model after rollback")
    assert os.readlink(models / "current") == "v0"


def test_corrupt_bundle_is_refused_before_the_switch(tmp_path, sshd, device):
    bad = variant(DEMO, tmp_path / "bad", "9.9.9", b"?")
    with open(bad / "model_quant.tflite", "r+b") as f:
        f.seek(2000)
        f.write(b"\x00\x01\x02\x03")
    r = deploy(sshd, device, "--model", str(bad), "--allow-cpu")
    assert r.returncode == 3, r.stderr
    assert "model_quant.tflite does not match its sha256" in r.stderr
    assert os.readlink(device["root"] / "models" / "current") == "v0"
    assert not (device["root"] / "models" / "previous").exists()
    still_classifying(device)


def test_unconfirmed_deploy_is_rolled_back_and_old_model_keeps_serving(tmp_path, sshd, device):
    new = variant(DEMO, tmp_path / "v2", "2.0.0", b"#")
    old_sha = served_sha(device["rec"])
    pid = device["daemon"].proc.pid
    # the service "reload" does nothing: the device never reports the new model
    r = deploy(sshd, device, "--model", str(new), "--allow-cpu", reload_cmd="true", timeout=4)
    assert r.returncode == 6, r.stderr
    assert "did not report the new model" in r.stderr and "Rolled back to v0" in r.stderr
    assert os.readlink(device["root"] / "models" / "current") == "v0"
    assert served_sha(device["rec"]) == old_sha
    assert device["daemon"].proc.pid == pid
    still_classifying(device)


def test_device_rejecting_the_model_rolls_back(tmp_path, sshd, device):
    """Passes every local check but fails on the device (here: its labels file is swapped
    after verification), so the daemon refuses the reload and keeps the old model."""
    new = variant(DEMO, tmp_path / "v3", "3.0.0", b"%")
    # a backend-specific failure stands in: the device's copy will not match its manifest
    r = deploy(sshd, device, "--model", str(new), "--allow-cpu",
               reload_cmd=f"sh -c 'echo x >> {device['root']}/models/current/labels.txt; "
                          f"kill -HUP {device['daemon'].proc.pid}'", timeout=15)
    assert r.returncode == 6, r.stderr
    assert "reload failed" in r.stderr
    assert os.readlink(device["root"] / "models" / "current") == "v0"
    still_classifying(device)


def test_missing_edgetpu_model_needs_allow_cpu(tmp_path, sshd, device):
    r = deploy(sshd, device, "--model", str(DEMO))
    assert r.returncode == 6 and "ALLOW_CPU=1" in r.stderr


def test_fleet_stops_at_the_first_failure(tmp_path, sshd, device):
    new = variant(DEMO, tmp_path / "v4", "4.0.0", b"&")
    pid = device["daemon"].proc.pid
    r = subprocess.run(
        [PYTHON, "-m", "host_training.deploy", "deploy", "--host", "nobody@127.0.0.1", "--host",
         sshd["host"], "--ssh-opts", sshd["opts"], "--root", str(device["root"]),
         "--device-id", "dev-1", "--reload-cmd", f"kill -HUP {pid}", "--broker",
         f"127.0.0.1:{device['port']}", "--model", str(new), "--allow-cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 6 and "nobody@127.0.0.1" in r.stderr
    assert os.readlink(device["root"] / "models" / "current") == "v0"  # second host untouched
    still_classifying(device)


def test_keeps_the_last_versions(tmp_path, sshd, device):
    from device.bundle import load_bundle

    for i, tag in enumerate((b"1", b"2", b"3")):
        new = variant(DEMO, tmp_path / f"k{i}", f"5.0.{i}", tag)
        r = deploy(sshd, device, "--model", str(new), "--allow-cpu", "--keep", "2")
        assert r.returncode == 0, r.stderr[-2000:]
    models = device["root"] / "models"
    dirs = sorted(p.name for p in models.iterdir() if p.is_dir() and not p.is_symlink())
    sha = load_bundle(tmp_path / "k2").sha256
    assert os.readlink(models / "current") == f"5.0.2-{sha[:12]}"
    assert len(dirs) == 2 and os.readlink(models / "previous") in dirs  # current + previous
    still_classifying(device)
