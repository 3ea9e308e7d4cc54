"""The shipped unit and udev rule: systemd-analyze verify with no warnings, the directives
the daemon relies on, the hardening score, and both USB IDs of the accelerator."""

import re
import shutil
import subprocess

import pytest

from .conftest import PYTHON, ROOT

UNIT = ROOT / "systemd" / "coral-classifier.service"
RULES = ROOT / "systemd" / "99-coral-edgetpu.rules"


@pytest.fixture
def unit_here(tmp_path):
    """The unit with ExecStart pointing at this checkout's entry point: verify refuses a
    program missing on this machine, and /opt/coral-classifier exists only on the Pi."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    exe = ROOT / ".venv" / "bin" / "coral-classifier"
    target = exe if exe.exists() else PYTHON
    text = UNIT.read_text().replace("/opt/coral-classifier/venv/bin/coral-classifier",
                                    str(target))
    f = tmp_path / "coral-classifier.service"
    f.write_text(text)
    return f


def test_verify_without_warnings(unit_here):
    r = subprocess.run(["systemd-analyze", "verify", str(unit_here)], capture_output=True,
                       text=True)
    # exit 0 even for typos: the output is what tells
    assert r.returncode == 0 and (r.stdout + r.stderr).strip() == "", r.stdout + r.stderr


def test_typo_would_be_caught(tmp_path, unit_here):
    bad = tmp_path / "typo.service"
    bad.write_text(unit_here.read_text().replace("WatchdogSec=", "WatchDogSec="))
    r = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True)
    assert r.returncode == 0  # still 0: only the output shows the typo
    assert "Unknown key 'WatchDogSec'" in r.stdout + r.stderr


def test_directives_the_daemon_relies_on():
    text = UNIT.read_text()
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
                 "StartLimitBurst=", "StateDirectory=coral-classifier",
                 "SupplementaryGroups=video plugdev apex", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ReadWritePaths=/var/lib/coral-classifier",
                 "ProtectHome=yes", "PrivateTmp=yes", "DevicePolicy=closed",
                 "DeviceAllow=char-apex rw", "DeviceAllow=char-usb_device rw",
                 "DeviceAllow=char-video4linux rw", "RestrictAddressFamilies="):
        assert line in text, line
    assert int(re.search(r"WatchdogSec=(\d+)", text).group(1)) >= 10
    directives = [ln for ln in text.splitlines() if not ln.startswith("#")]
    # /proc/cpuinfo must stay visible (XNNPACK); vchiq is not libcamera's; apex_0 alone
    # would miss a second card and one that appears after start
    for absent in ("ProcSubset=pid", "/dev/vchiq", "/dev/apex_0"):
        assert not any(absent in ln for ln in directives), absent


def test_security_exposure_is_low(unit_here):
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit_here)],
                       capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout + r.stderr)
    assert m, r.stdout[-500:] + r.stderr[-500:]
    assert float(m.group(1)) <= 1.5


def test_udev_rule_has_both_usb_ids_and_apex():
    text = RULES.read_text()
    assert re.search(r'idVendor}=="1a6e".*idProduct}=="089a".*GROUP="plugdev"', text)
    assert re.search(r'idVendor}=="18d1".*idProduct}=="9302".*GROUP="plugdev"', text)
    assert 'SUBSYSTEM=="apex"' in text
