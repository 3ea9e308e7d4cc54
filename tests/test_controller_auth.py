"""Deploy and rollout against the shipped broker setup (TLS, passwords, the ACL): with
`--config` (the same option `fleet` takes) their watcher logs in as the controller; without
it the refusal says what to give. Real mosquitto, real daemons, a real sshd, loopback."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from device.tools.synthetic import write_sequence

from .conftest import PYTHON, ROOT, write_config
from .test_broker_security import SecureRecorder, secure_broker  # noqa: F401 (fixture)
from .test_deploy import DEMO, sshd, variant  # noqa: F401 (fixture)


def controller_config(tmp_path: Path, b) -> Path:
    (tmp_path / "ctl-password").write_text("ctl\n")
    path = tmp_path / "controller.toml"
    path.write_text(
        f'[mqtt]\nhost = "localhost"\nport = {b.port}\nusername = "controller"\n'
        f'password_file = "{tmp_path / "ctl-password"}"\ntls = true\n'
        f'ca_file = "{b.dir / "ca.crt"}"\n')
    return path


def device(tmp_path: Path, b, daemon_factory):
    """vend-7 on the secure broker, serving models/current -> v0, taking http updates."""
    root = tmp_path / "device"
    (root / "models").mkdir(parents=True)
    shutil.copytree(DEMO, root / "models" / "v0")
    (root / "models" / "current").symlink_to("v0")
    write_sequence(tmp_path / "replay", ["note_5", "note_10"], gap=2, frames_per_object=3)
    cfg = write_config(
        tmp_path / "vend-7.toml",
        camera={"type": "replay", "source": str(tmp_path / "replay"), "fps": 10, "loop": True},
        model={"path": str(root / "models" / "current"), "backend": "cpu"},
        mqtt={"host": "127.0.0.1", "port": b.port, "device_id": "vend-7",
              "username": "vend-7", "password_file": str(b.dir / "pw7"), "tls": True,
              "ca_file": str(b.dir / "ca.crt"), "status_interval": 0.5},
        # unsigned: this test is about the controller's credentials, not about signing
        update={"allowed_schemes": ["http"], "allow_unsigned": True},
        state={"dir": str(tmp_path / "state")})
    return root, daemon_factory(cfg)


def served(rec) -> str:
    return rec.json_on("vend-7/status")[-1]["model"]["sha256"]


def test_rollout_and_deploy_log_in_with_config(tmp_path, secure_broker, daemon_factory,  # noqa: F811
                                               sshd):  # noqa: F811
    b = secure_broker
    rec = SecureRecorder(b.port, "coral-classifier/vend-7/#", "controller", "ctl",
                         b.dir / "ca.crt")
    root, d = device(tmp_path, b, daemon_factory)
    ctl = controller_config(tmp_path, b)
    try:
        rec.wait_for(lambda r: r.json_on("vend-7/status")[-1]["state"] == "running", 60,
                     "vend-7 running")
        v0_sha = served(rec)
        v1 = variant(DEMO, tmp_path / "v1", "1.0.1", b"R1")
        base = [PYTHON, "-m", "host_training.fleet.rollout", "--model", str(v1), "--device",
                "vend-7", "--allow-cpu", "--serve-address", "127.0.0.1", "--health", "1",
                "--timeout", "60"]
        # anonymous (no --config): refused, and told what to give
        r = subprocess.run([*base, "--broker", f"127.0.0.1:{b.port}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and "--config" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        # the controller's config: the rollout goes through
        r = subprocess.run([*base, "--config", str(ctl)], cwd=ROOT, capture_output=True,
                           text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        rec.wait_for(lambda r: served(r) != v0_sha, 30, "the rolled-out model served")
        rollout_sha = served(rec)
        # deploy over ssh, confirmed over the same secure broker with --config
        v2 = variant(DEMO, tmp_path / "v2", "1.0.2", b"R2")
        r = subprocess.run(
            [PYTHON, "-m", "host_training.fleet.deploy", "deploy", "--host", sshd["host"],
             "--ssh-opts", sshd["opts"], "--root", str(root), "--device-id", "vend-7",
             "--reload-cmd", f"kill -HUP {d.proc.pid}", "--config", str(ctl),
             "--model", str(v2), "--allow-cpu", "--timeout", "60"],
            cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        rec.wait_for(lambda r: served(r) != rollout_sha, 30, "the deployed model served")
        assert d.proc.poll() is None
    finally:
        rec.close()
