"""`make deploy` for real, over ssh to this machine: an sshd on a free loopback port with a
throwaway key, a temporary device root, and the daemon serving from models/current.

The numbered failures of issue 14 each have a test here (#1 in test_install.py's
unprivileged deploy into a layout made by install-device.sh)."""

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from device.bundle import write_manifest

from .conftest import (
    PYTHON,
    ROOT,
    Recorder,
    free_port,
    lock_held,
    wait_port,
    wait_until,
    write_config,
)

DEMO = ROOT / "compiled_models" / "demo-notes"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not Path(SSHD).exists() or not shutil.which("rsync"):
        pytest.fail("openssh-server and rsync are needed: `make test` installs them")
    # world-readable: sshd reads authorized_keys as the user logging in (an unprivileged
    # deploy user too), and pytest's own folders are private to root
    d = Path(tempfile.mkdtemp(prefix="coral-ssh-"))
    d.chmod(0o755)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host")],
                   check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "id")],
                   check=True)
    shutil.copy(d / "id.pub", d / "authorized_keys")
    (d / "authorized_keys").chmod(0o644)
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
    yield {"host": f"{user}@127.0.0.1", "opts": opts, "dir": d}
    proc.terminate()
    proc.wait(5)
    shutil.rmtree(d, ignore_errors=True)


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
        [PYTHON, "-m", "host_training.fleet.deploy", command, "--host", sshd["host"], "--ssh-opts",
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
        [PYTHON, "-m", "host_training.fleet.deploy", "deploy", "--host", "nobody@127.0.0.1",
         "--host",
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


# -- issue 14: the numbered failures ----------------------------------------------------------
def links(device) -> dict[str, str]:
    models = device["root"] / "models"
    return {n: os.readlink(models / n) if (models / n).is_symlink() else ""
            for n in ("current", "previous")}


def sha_of(bundle: Path) -> str:
    from device.bundle import load_bundle

    return load_bundle(bundle).sha256


@pytest.mark.parametrize("reload_cmd", ["false", "kill -9 $PPID"], ids=["fails", "ssh-drop"])
def test_2_a_failing_reload_or_a_dropped_ssh_rolls_back(tmp_path, sshd, device, reload_cmd):
    """#2: the reload command fails (or the ssh session dies under it) after the switch."""
    new = variant(DEMO, tmp_path / "v2", "2.1.0", b"(")
    old_sha = served_sha(device["rec"])
    r = deploy(sshd, device, "--model", str(new), "--allow-cpu", reload_cmd=reload_cmd)
    assert r.returncode == 6, r.stderr
    assert "Rolled back to v0" in r.stderr
    assert links(device) == {"current": "v0", "previous": ""}
    assert not (device["root"] / "models" / ".deploy-pending").exists()
    assert served_sha(device["rec"]) == old_sha
    still_classifying(device)


def test_3_two_deploys_are_serialised_by_the_device_lock(tmp_path, sshd, device):
    """#3: A's reload is slow; B, started meanwhile, waits for A's lock instead of racing."""
    a = variant(DEMO, tmp_path / "a", "3.0.0", b"A")
    b = variant(DEMO, tmp_path / "b", "3.1.0", b"B")
    pid = device["daemon"].proc.pid
    out = {}

    def run(name, bundle, cmd):
        out[name] = deploy(sshd, device, "--model", str(bundle), "--allow-cpu",
                           reload_cmd=cmd, timeout=40)
        out[name + "_t"] = time.monotonic()

    ta = threading.Thread(target=run, args=("a", a, f"sleep 4; kill -HUP {pid}"))
    ta.start()
    wait_until(lambda: lock_held(device["root"] / "models" / ".deploy.lock"), 60,
               "deploy A holding the device's lock")
    run("b", b, f"kill -HUP {pid}")
    ta.join()
    assert out["a"].returncode == 0, out["a"].stderr[-2000:]
    assert out["b"].returncode == 0, out["b"].stderr[-2000:]
    assert out["a_t"] < out["b_t"], "B finished before A released the lock"
    sha_b = sha_of(b)
    assert links(device) == {"current": f"3.1.0-{sha_b[:12]}",
                             "previous": f"3.0.0-{sha_of(a)[:12]}"}
    device["rec"].wait_for(lambda r: served_sha(r) == sha_b, 10, "B's model serving")
    n = len(device["rec"].on("/status"))  # and it stays: the next three status messages
    device["rec"].wait_for(lambda r: len(r.on("/status")) >= n + 3, 20, "three more statuses")
    assert {s["model"]["sha256"] for s in device["rec"].json_on("/status")[n:]} == {sha_b}
    still_classifying(device)


def test_4_a_good_deploy_right_after_a_rejected_one_is_confirmed(tmp_path, sshd, device):
    """#4: the rejected deploy leaves 'reload failed' in status.last_error, republished with
    fresh timestamps; the next deploy must not read it as its own failure."""
    pid = device["daemon"].proc.pid
    bad = variant(DEMO, tmp_path / "bad", "4.0.0", b"%")
    r = deploy(sshd, device, "--model", str(bad), "--allow-cpu",
               reload_cmd=f"sh -c 'echo x >> {device['root']}/models/current/labels.txt; "
                          f"kill -HUP {pid}'", timeout=15)
    assert r.returncode == 6 and "reload failed" in r.stderr, r.stderr
    assert "reload failed" in device["rec"].json_on("/status")[-1]["last_error"]
    for i, tag in enumerate((b"g", b"h")):
        good = variant(DEMO, tmp_path / f"good{i}", f"4.1.{i}", tag)
        r = deploy(sshd, device, "--model", str(good), "--allow-cpu")
        assert r.returncode == 0, r.stderr[-2000:]
        assert served_sha(device["rec"]) == sha_of(good)
    still_classifying(device)


def test_5_hosts_cannot_become_ssh_options_or_shell_commands(tmp_path, sshd, device):
    """#5: a host starting with '-' is refused (and ssh gets `--` before it); the Makefile
    quotes HOST, so HOST='pi@x;cmd' never runs cmd."""
    marker = tmp_path / "injected"
    r = subprocess.run(
        [PYTHON, "-m", "host_training.fleet.deploy", "rollback", "--host",
         f"-oProxyCommand=touch {marker}", "--timeout", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not starting with '-'" in r.stderr, r.stderr
    assert not marker.exists()
    for host in (f"pi@x;touch {marker}", f"pi@x$(touch {marker})", f"`touch {marker}`"):
        r = subprocess.run(["make", "-s", "-o", ".venv/.installed", "rollback", f"HOST={host}",
                            "DEPLOY_ARGS=--timeout 2"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode != 0
        assert not marker.exists(), f"HOST={host!r} ran a command"
    assert links(device)["current"] == "v0"


def test_6_previous_moves_only_after_confirmation(tmp_path, sshd, device):
    """#6: a failed deploy must leave previous where it was (not previous = current)."""
    good = variant(DEMO, tmp_path / "g", "6.0.0", b"6")
    assert deploy(sshd, device, "--model", str(good), "--allow-cpu").returncode == 0
    before = links(device)
    assert before["previous"] == "v0"
    bad = variant(DEMO, tmp_path / "b", "6.1.0", b"7")
    r = deploy(sshd, device, "--model", str(bad), "--allow-cpu", reload_cmd="true", timeout=3)
    assert r.returncode == 6, r.stderr
    assert links(device) == before
    r = deploy(sshd, device, command="rollback")
    assert r.returncode == 0, r.stderr[-2000:]
    assert links(device)["current"] == "v0"


def test_6_pruning_spares_what_absolute_links_point_to(tmp_path, sshd, device):
    """#6: with `current` an absolute symlink, --keep 2 must not delete previous's target,
    and rollback must still work afterwards."""
    models = device["root"] / "models"
    (models / "current").unlink()
    (models / "current").symlink_to(models / "v0")  # absolute, as a hand-made layout has
    shas = []
    for i, tag in enumerate((b"p", b"q", b"r")):
        new = variant(DEMO, tmp_path / f"p{i}", f"6.2.{i}", tag)
        shas.append(sha_of(new))
        r = deploy(sshd, device, "--model", str(new), "--allow-cpu", "--keep", "2")
        assert r.returncode == 0, r.stderr[-2000:]
        for name in ("current", "previous"):
            assert (models / name).resolve().is_dir(), f"{name} dangles after deploy {i}"
    assert links(device)["previous"] == f"6.2.1-{shas[1][:12]}"
    r = deploy(sshd, device, command="rollback")
    assert r.returncode == 0, r.stderr[-2000:]
    device["rec"].wait_for(lambda r: served_sha(r) == shas[1], 10, "rolled back")


@pytest.mark.parametrize("version", ["-c", "../up", "a b", "x;touch y", ""])
def test_6_unsafe_versions_are_refused_before_anything_is_written(tmp_path, sshd, device,
                                                                 version):
    """#6: version "" or "-c..." once made folders like `-<sha>`, `rm: invalid option`
    and a stale .partial: now nothing reaches the device."""
    bad = variant(DEMO, tmp_path / "v", "1.0.0", b"v")
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["version"] = version
    (bad / "manifest.json").write_text(json.dumps(manifest))  # files' sha256s still hold
    before = sorted(p.name for p in (device["root"] / "models").iterdir())
    r = deploy(sshd, device, "--model", str(bad), "--allow-cpu")
    assert r.returncode in (3, 6), r.stderr
    assert "version" in r.stderr
    after = sorted(p.name for p in (device["root"] / "models").iterdir())
    assert after == before, "something was written on the device"


# -- #1: deploy as an unprivileged user into the layout install-device.sh makes ---------------
SVC, GROUP, DEPLOYER = "cc-test-svc", "cc-test-deploy", "cc-test-deployer"


@pytest.fixture(scope="module")
def accounts():
    if os.geteuid() != 0:
        pytest.skip("creating the test's service and deploy accounts needs root")
    run = lambda *a: subprocess.run(a, capture_output=True, text=True)  # noqa: E731
    run("groupadd", "--system", GROUP)
    run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SVC)
    run("useradd", "--no-create-home", "--shell", "/bin/sh", "-G", GROUP, DEPLOYER)
    run("usermod", "-p", "*", DEPLOYER)  # no password, but not locked: key login works
    yield
    for args in (("userdel", DEPLOYER), ("userdel", SVC), ("groupdel", GROUP)):
        run(*args)


def test_1_unprivileged_deploy_into_the_installed_layout(tmp_path, sshd, broker,
                                                          daemon_factory, accounts):
    """#1: the layout comes from install-device.sh itself (DESTDIR, as root, with the real
    owners); the deploy user is only in the deploy group: no sudo for rsync, mv or ln."""
    import sys

    base = Path(tempfile.mkdtemp(prefix="coral-root-"))  # the deploy user must reach it
    base.chmod(0o755)
    dest = base / "root"
    r = subprocess.run(
        [str(ROOT / "systemd/install-device.sh"), "install"], capture_output=True, text=True,
        timeout=600, env={**os.environ, "DESTDIR": str(dest), "PYTHON": sys.executable,
                          "PIP_ARGS": "--no-deps", "SERVICE_USER": SVC,
                          "DEPLOY_GROUP": GROUP})
    assert r.returncode == 0, r.stdout + r.stderr
    state = dest / "var/lib/coral-classifier"
    models = state / "models"
    st = models.stat()
    import grp
    import pwd

    assert pwd.getpwuid(state.stat().st_uid).pw_name == SVC
    assert oct(state.stat().st_mode & 0o7777) == "0o751"
    assert (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name) == (SVC, GROUP)
    assert oct(st.st_mode & 0o7777) == "0o2775"
    # what an earlier deploy left: v0 serving (owned like the store makes it)
    shutil.copytree(DEMO, models / "v0")
    subprocess.run(["chown", "-R", f"{SVC}:{GROUP}", str(models / "v0")], check=True)
    subprocess.run(["chmod", "-R", "g+w", str(models / "v0")], check=True)
    (models / "current").symlink_to("v0")
    replay = tmp_path / "replay"
    from device.tools.synthetic import write_sequence

    write_sequence(replay, ["note_5", "note_10"], gap=2, frames_per_object=3)
    cfg = write_config(tmp_path / "dev.toml",
                       camera={"type": "replay", "source": str(replay), "fps": 20, "loop": True},
                       model={"path": str(models / "current"), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "dev-1u",
                             "status_interval": 0.5})
    rec = Recorder(broker.port, "coral-classifier/dev-1u/#")
    try:
        daemon_factory(cfg)
        rec.wait_for(lambda r: len(r.on("/result")) >= 3, 60, "results from v0")
        new = variant(DEMO, tmp_path / "v1", "1.5.0", b"u")
        sha = sha_of(new)
        r = subprocess.run(
            [PYTHON, "-m", "host_training.fleet.deploy", "deploy", "--host",
             f"{DEPLOYER}@127.0.0.1", "--ssh-opts", sshd["opts"], "--root", str(state),
             "--device-id", "dev-1u", "--reload-cmd", "mqtt", "--broker",
             f"127.0.0.1:{broker.port}", "--timeout", "30", "--model", str(new),
             "--allow-cpu"], cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "Permission denied" not in r.stderr
        version = f"1.5.0-{sha[:12]}"
        assert os.readlink(models / "current") == version
        assert os.readlink(models / "previous") == "v0"
        assert grp.getgrgid((models / version).stat().st_gid).gr_name == GROUP
        assert pwd.getpwuid((models / version).stat().st_uid).pw_name == DEPLOYER
        rec.wait_for(lambda r: served_sha(r) == sha, 10, "the new model serving")
        # the deploy user's versions stay prunable by the group (the device's own updater)
        assert (models / version / "model_quant.tflite").stat().st_mode & 0o020
    finally:
        rec.close()
        shutil.rmtree(base, ignore_errors=True)


def test_a_switch_left_by_a_dead_deploy_is_undone_first(tmp_path, sshd, device):
    """A deploy killed between its switch and its confirmation leaves models/.deploy-pending
    naming what served before; the next deploy restores it before anything else, so its
    `previous` is the model that really served, not the unconfirmed one."""
    models = device["root"] / "models"
    shutil.copytree(DEMO, models / "half-1.0.0-000000000000")
    (models / "current").unlink()
    (models / "current").symlink_to("half-1.0.0-000000000000")
    (models / ".deploy-pending").write_text("v0\n")
    new = variant(DEMO, tmp_path / "after", "9.0.0", b"9")
    r = deploy(sshd, device, "--model", str(new), "--allow-cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "did not finish; restoring current -> v0" in r.stderr
    assert links(device) == {"current": f"9.0.0-{sha_of(new)[:12]}", "previous": "v0"}
    assert not (models / ".deploy-pending").exists()


def test_the_first_deploy_starts_the_service(tmp_path, sshd, broker):
    """A fresh install has no model, so its service is not running and cannot reload: the
    first deploy runs the start command and is confirmed by the nonce the daemon reads at
    start (the README's flow: install-device, then make deploy)."""
    import signal

    root = tmp_path / "fresh"
    (root / "models").mkdir(parents=True)
    from device.tools.synthetic import write_sequence

    write_sequence(tmp_path / "replay", ["note_5"], gap=2, frames_per_object=3)
    cfg = write_config(tmp_path / "first.toml",
                       camera={"type": "replay", "source": str(tmp_path / "replay"),
                               "fps": 10, "loop": True},
                       model={"path": str(root / "models" / "current"), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": broker.port,
                             "device_id": "dev-first", "status_interval": 0.5})
    pidfile = tmp_path / "daemon.pid"
    start = (f"sh -c 'cd {ROOT} && nohup {PYTHON} -m device run --config {cfg} "
             f"> {tmp_path / 'first.log'} 2>&1 & echo $! > {pidfile}'")
    new = variant(DEMO, tmp_path / "v1", "1.0.1", b"f")
    rec = Recorder(broker.port, "coral-classifier/dev-first/#")
    try:
        r = subprocess.run(
            [PYTHON, "-m", "host_training.fleet.deploy", "deploy", "--host", sshd["host"],
             "--ssh-opts", sshd["opts"], "--root", str(root), "--device-id", "dev-first",
             "--start-cmd", start, "--reload-cmd", "false", "--broker",
             f"127.0.0.1:{broker.port}", "--timeout", "60", "--model", str(new),
             "--allow-cpu"], cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        sha = sha_of(new)
        assert os.readlink(root / "models" / "current") == f"1.0.1-{sha[:12]}"
        assert not (root / "models" / "previous").exists()
        assert served_sha(rec) == sha
    finally:
        rec.close()
        if pidfile.exists():
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not pid_alive(pid), 20, "the started daemon to stop")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
