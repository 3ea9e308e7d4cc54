"""`make install-device` / `uninstall-device`, run for real into a staging root (DESTDIR):
venv with --system-site-packages, config, unit and udev rule; idempotent; uninstall."""

import os
import subprocess
import sys

from .conftest import ROOT

SCRIPT = ROOT / "systemd" / "install-device.sh"


def run(action, dest, **env):
    return subprocess.run(
        [str(SCRIPT), action], capture_output=True, text=True, timeout=600,
        env={**os.environ, "DESTDIR": str(dest), "PYTHON": sys.executable,
             "PIP_ARGS": "--no-deps", **env})


def test_install_is_complete_and_idempotent_then_uninstall(tmp_path):
    dest = tmp_path / "root"
    r = run("install", dest)
    assert r.returncode == 0, r.stdout + r.stderr
    venv = dest / "opt" / "coral-classifier" / "venv"
    cfg = venv / "pyvenv.cfg"
    assert "include-system-site-packages = true" in cfg.read_text()
    assert (dest / "etc/systemd/system/coral-classifier.service").is_file()
    assert (dest / "etc/udev/rules.d/99-coral-edgetpu.rules").is_file()
    assert (dest / "var/lib/coral-classifier/models").is_dir()
    config = dest / "etc/coral-classifier/config.toml"
    text = config.read_text()
    assert 'type = "picamera2"' in text
    assert 'path = "/var/lib/coral-classifier/models/current"' in text
    assert 'dir = "/var/lib/coral-classifier"' in text
    assert "make deploy" in r.stdout  # no model yet: says what to do
    # the installed entry point works and accepts the generated config
    check = subprocess.run([str(venv / "bin" / "coral-classifier"), "check-config", str(config)],
                           capture_output=True, text=True)
    # valid, but no model deployed yet: check-config names that (the daemon would not start)
    assert check.returncode == 2 and "models/current': no such file" in check.stderr, \
        check.stderr
    assert "make deploy" in check.stderr

    config.write_text(text.replace('host = "localhost"', 'host = "broker.local"'))
    r2 = run("install", dest)
    assert r2.returncode == 0 and "kept the existing" in r2.stdout
    assert 'host = "broker.local"' in config.read_text()  # the user's edit survives

    r3 = run("uninstall", dest)
    assert r3.returncode == 0
    assert not venv.exists() and not (dest / "etc/systemd/system/coral-classifier.service").exists()
    assert config.exists(), "config and models are kept unless PURGE=1"
    r4 = run("uninstall", dest, PURGE="1")
    assert r4.returncode == 0 and not config.exists()


def test_6_uninstall_removes_only_its_own_paths(tmp_path):
    """#6: an exported PREFIX=/usr/local once made uninstall `rm -rf` the whole prefix."""
    dest = tmp_path / "root"
    tool = dest / "usr/local/bin/other-tool"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\n")
    r = run("uninstall", dest, PREFIX="/usr/local")
    assert r.returncode != 0 and "system folder" in r.stderr, r.stdout + r.stderr
    assert tool.exists()
    r = run("install", dest, PREFIX="/usr/local")
    assert r.returncode != 0 and "system folder" in r.stderr
    # a folder of its own that install-device did not make: refused, untouched
    other = dest / "opt/someone-else/data.txt"
    other.parent.mkdir(parents=True)
    other.write_text("keep me")
    r = run("uninstall", dest, PREFIX="/opt/someone-else")
    assert r.returncode != 0 and "not made by install-device" in r.stderr
    assert other.read_text() == "keep me"
    for prefix in ("relative/path", "/opt/../usr"):
        assert run("uninstall", dest, PREFIX=prefix).returncode != 0


def test_sudoers_rule_allows_only_the_reload(tmp_path):
    """The deploy group's sudo rule validates (visudo) and names nothing but reload and
    restart of the service."""
    import shutil

    dest = tmp_path / "root"
    r = run("install", dest)
    assert r.returncode == 0, r.stdout + r.stderr
    rule = dest / "etc/sudoers.d/coral-classifier-deploy"
    assert oct(rule.stat().st_mode & 0o777) == "0o440"
    text = rule.read_text()
    commands = [ln for ln in text.splitlines() if "/systemctl" in ln]
    assert commands and all("systemctl reload coral-classifier" in ln or
                            "systemctl restart coral-classifier" in ln for ln in commands)
    assert "%coral-classifier-deploy ALL=(root) NOPASSWD: CORAL_RELOAD" in text
    if shutil.which("visudo"):
        check = subprocess.run(["visudo", "-cf", str(rule)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    assert (dest / "opt/coral-classifier/.installed-by-coral-classifier").exists()
    r = run("uninstall", dest)
    assert r.returncode == 0, r.stderr
    assert not rule.exists() and not (dest / "opt/coral-classifier").exists()
