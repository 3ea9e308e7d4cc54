"""`make collect HOST=pi@… [OUT=data/]`: pull the frames labelled on a device into the class
folders `coral-train train --data` reads, merging with what is there, never overwriting.

rsync (over ssh) mirrors the device's <state>/dataset/ into OUT/.collect/<host>/ (only the
class folders' JPEGs and their JSON sidecars; `_unlabelled`, `_rejected` and the model's
`.model/` views stay on the device), so a second run moves only new frames. Each frame is
then copied into OUT/<label>/ (regular files only, never through a link, never outside
OUT, none over --max-size: the device is not trusted): a file of the same name and
content is already there (skipped); a different one of the same name gets a new name
(both kept). Frame names start with the device id (`<device>__<time>_<seq>.jpg`), which
is how the trainer's report counts the images each device gave.
"""

from __future__ import annotations

import argparse
import filecmp
import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

log = logging.getLogger("host_training.fleet.collect")

REMOTE = "/var/lib/coral-classifier/dataset"  # systemd's StateDirectory=coral-classifier
MAX_SIZE = 20 << 20  # a saved frame is well under 1 MB; anything this big is not one
HOST = re.compile(r"^(?!-)[A-Za-z0-9_.@\[\]:%-]{1,255}$")
REMOTE_PATH = re.compile(r"^/[A-Za-z0-9_./-]{0,1023}$")
LABEL = re.compile(r"^(?![.-])[A-Za-z0-9_.-]{1,64}$")  # the device's class folder names


def check_target(host: str, remote: str) -> None:
    """A host and a remote folder that cannot be read as options or shell syntax."""
    if not HOST.match(host):
        raise SystemExit(f"--host {host[:80]!r} is not an ssh destination: user@host or "
                         "host (letters, digits, . _ - @ [ ] :), not starting with '-'")
    if not REMOTE_PATH.match(remote):
        raise SystemExit(f"--remote {remote[:80]!r} must be an absolute path of letters, "
                         "digits, . _ - /")


def pull(host: str, remote: str, staging: Path, ssh_opts: str = "",
         max_size: int = MAX_SIZE) -> None:
    """Mirror the device's labelled frames into `staging` (rsync over ssh): regular files
    only (no links, devices, specials, owners or special mode bits), none over max_size."""
    if not shutil.which("rsync"):
        raise SystemExit("rsync is not installed here: `sudo apt-get install rsync` (and on "
                         "the device)")
    check_target(host, remote)
    staging.mkdir(parents=True, exist_ok=True)
    ssh = "ssh " + ssh_opts if ssh_opts else "ssh"
    # -rt, not -a: the device is not trusted with links, devices, owners or setuid bits
    cmd = ["rsync", "-rt", "--chmod=F0644,D0755", "--no-links", "--no-devices",
           "--no-specials", "--safe-links", f"--max-size={max_size}", "--prune-empty-dirs",
           "-e", ssh, "--exclude", ".*", "--exclude", "_*/",
           "--include", "*/", "--include", "*.jpg", "--include", "*.json", "--exclude", "*",
           "--", f"{host}:{remote.rstrip('/')}/", f"{staging}/"]
    log.debug("%s", shlex.join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"rsync from {host}:{remote} failed (exit {r.returncode}): "
                         f"{r.stderr.strip()}\nIs the host reachable with ssh, and is the "
                         "daemon's state folder there (REMOTE=...)?")


def _regular(path: Path, max_size: int) -> str:
    """Why `path` is not merged ('' = a regular file, not a link, within max_size)."""
    try:
        st = path.lstat()
    except OSError as exc:
        return str(exc)
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size > max_size:
        return f"{st.st_size} bytes, over --max-size {max_size}"
    return ""


def _copy(src: Path, dest: Path, max_size: int) -> None:
    """Copy without following a link at either end, never over an existing file, at most
    max_size bytes (the source is checked again once open: it may have changed)."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_size:
            raise OSError(f"{src} changed into something that is not merged")
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(out, "wb") as g:
            g.write(f.read(max_size + 1)[:max_size])
    os.utime(dest, (st.st_atime, st.st_mtime))


def _place(src: Path, target: Path) -> Path | None:
    """Where src goes beside a different file of the same name: None when a renamed copy
    from an earlier run is already there, else the first free `<stem>-N` name."""
    for i in range(1, 10_000):
        candidate = target.with_name(f"{target.stem}-{i}{target.suffix}")
        if not os.path.lexists(candidate):
            return candidate
        if not candidate.is_symlink() and filecmp.cmp(src, candidate, shallow=False):
            return None
    raise SystemExit(f"no free name next to {target}")


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _folders(root: Path, refused: Counter) -> list[Path]:
    """The class folders in root: real folders (not links) with a class name."""
    found = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_symlink() or not entry.is_dir() or not LABEL.match(entry.name):
            log.warning("refused %s: not a class folder (a link, a file or a bad name)", entry)
            refused[entry.name] += 1
            continue
        found.append(entry)
    return found


def merge(staging: Path, out: Path, max_size: int = MAX_SIZE) -> dict[str, Counter]:
    """Copy the staged frames into out/<label>/ without overwriting anything; links,
    devices, oversized files and anything that would land outside `out` are refused."""
    stats = {k: Counter() for k in ("added", "already", "renamed", "refused")}
    for class_dir in _folders(staging, stats["refused"]):
        label = class_dir.name
        for jpg in sorted(class_dir.glob("*.jpg")):
            why = _regular(jpg, max_size)
            dest = out / label / jpg.name
            if not why and not _inside(dest, out):
                why = f"{dest} resolves outside {out}"
            if why:
                log.warning("refused %s: %s", jpg, why)
                stats["refused"][label] += 1
                continue
            if dest.exists() or dest.is_symlink():
                if not dest.is_symlink() and filecmp.cmp(jpg, dest, shallow=False):
                    stats["already"][label] += 1
                    continue
                dest = _place(jpg, dest)
                if dest is None:
                    stats["already"][label] += 1
                    continue
                stats["renamed"][label] += 1
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not _inside(dest.parent, out):
                log.warning("refused %s: %s resolves outside %s", jpg, dest.parent, out)
                stats["refused"][label] += 1
                continue
            _copy(jpg, dest, max_size)
            side, side_dest = jpg.with_suffix(".json"), dest.with_suffix(".json")
            if not _regular(side, max_size) and not os.path.lexists(side_dest):
                _copy(side, side_dest, max_size)
            stats["added"][label] += 1
    return stats


def collect(host: str, out: Path, remote: str = REMOTE, ssh_opts: str = "",
            max_size: int = MAX_SIZE) -> dict[str, Counter]:
    """Pull and merge; returns per-class counts of frames added, already there, renamed
    and refused."""
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", host)
    staging = out / ".collect" / safe
    pull(host, remote, staging, ssh_opts, max_size)
    return merge(staging, out, max_size)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", required=True, help="ssh destination, e.g. pi@coral-1.local")
    ap.add_argument("--out", type=Path, default=Path("data"),
                    help="dataset folder to merge into (class subfolders; default data/)")
    ap.add_argument("--remote", default=REMOTE,
                    help=f"the device's dataset folder (default {REMOTE})")
    ap.add_argument("--ssh_opts", "--ssh-opts", dest="ssh_opts", default="",
                    help="extra ssh options, e.g. '-p 2222 -i ~/.ssh/coral'")
    ap.add_argument("--max_size", "--max-size", dest="max_size", type=int, default=MAX_SIZE,
                    help=f"largest file taken, in bytes (default {MAX_SIZE}); larger ones "
                    "stay on the device")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stats = collect(a.host, a.out, a.remote, a.ssh_opts, a.max_size)
    labels = sorted(set().union(*stats.values()))
    for label in labels:
        print(f"{label:24s} +{stats['added'][label]} new ({stats['renamed'][label]} renamed "
              f"to keep both), {stats['already'][label]} already there"
              + (f", {stats['refused'][label]} refused" if stats["refused"][label] else ""))
    total = sum(stats["added"].values())
    print(f"{total} frame(s) from {a.host} merged into {a.out}"
          + ("" if labels else " (the device has no labelled frames yet)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
