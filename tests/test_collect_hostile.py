"""`make collect` trusts nothing on the device: links (to files and folders), devices,
FIFOs, setuid bits and oversized files are not pulled or not merged, nothing lands outside
OUT, and HOST/OUT/REMOTE cannot run commands through the Makefile. A real sshd + rsync on
loopback (the fixture of tests/test_deploy.py)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from host_training.fleet.collect import merge

from .conftest import ROOT
from .test_collect import collect
from .test_deploy import sshd  # noqa: F401 (the fixture: a real sshd on a free port)

JPEG = b"\xff\xd8\xff\xe0" + b"frame" * 100


def hostile_device(root: Path, secret: Path, secret_dir: Path) -> Path:
    """A device dataset holding one good frame and every trick in the issue."""
    dataset = root / "dataset"
    good = dataset / "note_5"
    good.mkdir(parents=True)
    (good / "good.jpg").write_bytes(JPEG)
    (good / "good.json").write_text('{"ok": true}')
    (good / "leak.jpg").symlink_to(secret)  # a workstation file, mode 600
    (good / "leak.json").symlink_to(secret)
    (good / "dir.jpg").symlink_to(secret_dir)  # aborted the old merge (IsADirectoryError)
    (dataset / "note_10").symlink_to(secret_dir)  # a class folder that is a link
    (good / "suid.jpg").write_bytes(JPEG + b"suid")
    (good / "suid.jpg").chmod(0o4755)
    (good / "big.jpg").write_bytes(JPEG * 5000)  # ~2.5 MB "frame", over --max-size
    os.mkfifo(good / "fifo.jpg")
    if os.geteuid() == 0:
        os.mknod(good / "zero.jpg", 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    return dataset


def test_collect_pulls_only_regular_files_within_size(tmp_path, sshd):  # noqa: F811
    secret = tmp_path / "workstation" / "id_secret"
    secret.parent.mkdir()
    secret.write_text("the workstation's secret\n")
    secret.chmod(0o600)
    secret_dir = tmp_path / "workstation" / "private"
    secret_dir.mkdir()
    (secret_dir / "photo.jpg").write_bytes(JPEG + b"private")
    remote = hostile_device(tmp_path / "device", secret, secret_dir)
    out = tmp_path / "data"
    r = collect(sshd, remote, out, "--max-size", "1000000")
    assert r.returncode == 0, r.stderr
    got = sorted(p.name for p in out.rglob("*") if ".collect" not in p.parts)
    assert got == ["good.jpg", "good.json", "note_5", "suid.jpg"], got
    pulled = out / "note_5"
    assert (pulled / "good.jpg").read_bytes() == JPEG
    assert not stat.S_IMODE((pulled / "suid.jpg").stat().st_mode) & 0o7000, "no setuid bit"
    staged = [p for p in (out / ".collect").rglob("*")]
    assert not any(p.is_symlink() or not (p.is_file() or p.is_dir()) for p in staged)
    assert "the workstation's secret" not in "".join(
        p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())


def test_merge_refuses_links_specials_and_paths_outside_out(tmp_path):
    """Even when the staging folder holds them (an old rsync, a hand-made copy)."""
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    secret.chmod(0o600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    staging = tmp_path / "staging"
    (staging / "note_5").mkdir(parents=True)
    (staging / "note_5" / "a.jpg").write_bytes(JPEG)
    (staging / "note_5" / "leak.jpg").symlink_to(secret)
    (staging / "note_5" / "dir.jpg").symlink_to(elsewhere)
    (staging / "note_5" / "big.jpg").write_bytes(JPEG * 100)
    os.mkfifo(staging / "note_5" / "fifo.jpg")
    (staging / "note_10").symlink_to(elsewhere)
    (staging / "note_20").mkdir()
    (staging / "note_20" / "b.jpg").write_bytes(JPEG)
    out = tmp_path / "out"
    out.mkdir()
    (out / "note_20").symlink_to(elsewhere)  # a class folder in OUT leading outside it
    stats = merge(staging, out, max_size=10_000)
    assert stats["added"] == {"note_5": 1}
    assert stats["refused"] == {"note_5": 4, "note_10": 1, "note_20": 1}
    assert (out / "note_5" / "a.jpg").read_bytes() == JPEG
    assert sorted(p.name for p in (out / "note_5").iterdir()) == ["a.jpg"]
    assert list(elsewhere.iterdir()) == [], "nothing written outside OUT"


@pytest.mark.parametrize("var, value", [
    ("HOST", "pi@x`touch {pwn}`"),
    ("HOST", "pi@x$(touch {pwn})"),
    ("OUT", '{tmp}/o"; touch {pwn}; echo "'),
    ("REMOTE", "/d'; touch {pwn}; echo '"),
])
def test_make_collect_quotes_its_arguments(tmp_path, var, value):
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    pwn = tmp_path / "pwned"
    args = {"HOST": "pi@device", "OUT": str(tmp_path / "out")}
    args[var] = value.format(pwn=pwn, tmp=tmp_path)
    # PY=true: the recipe's shell line runs, the collect itself does not
    r = subprocess.run(["make", "-s", "collect", "PY=true",
                        *(f"{k}={v}" for k, v in args.items())],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not pwn.exists(), f"{var}={args[var]!r} ran a command"


def test_collect_refuses_option_like_hosts(tmp_path):
    from .conftest import PYTHON

    r = subprocess.run([PYTHON, "-m", "host_training.fleet.collect", "--host",
                        "-oProxyCommand=touch x", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "is not an ssh destination" in r.stderr
    assert "Traceback" not in r.stderr
