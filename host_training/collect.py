"""`make collect HOST=pi@… [OUT=data/]`: pull the frames labelled on a device into the class
folders `coral-train train --data` reads, merging with what is there, never overwriting.

rsync (over ssh) mirrors the device's <state>/dataset/ into OUT/.collect/<host>/ (only the
class folders' JPEGs and their JSON sidecars; `_unlabelled`, `_rejected` and the model's
`.model/` views stay on the device), so a second run moves only new frames. Each frame is
then copied into OUT/<label>/: a file of the same name and content is already there
(skipped); a different one of the same name gets a new name (both kept). Frame names
start with the device id (`<device>__<time>_<seq>.jpg`), which is how the trainer's report
counts the images each device gave.
"""

from __future__ import annotations

import argparse
import filecmp
import logging
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

log = logging.getLogger("host_training.collect")

REMOTE = "/var/lib/coral-classifier/dataset"  # systemd's StateDirectory=coral-classifier


def pull(host: str, remote: str, staging: Path, ssh_opts: str = "") -> None:
    """Mirror the device's labelled frames into `staging` (rsync over ssh)."""
    if not shutil.which("rsync"):
        raise SystemExit("rsync is not installed here: `sudo apt-get install rsync` (and on "
                         "the device)")
    staging.mkdir(parents=True, exist_ok=True)
    ssh = "ssh " + ssh_opts if ssh_opts else "ssh"
    cmd = ["rsync", "-a", "--prune-empty-dirs", "-e", ssh,
           "--exclude", ".*", "--exclude", "_*/",
           "--include", "*/", "--include", "*.jpg", "--include", "*.json", "--exclude", "*",
           f"{host}:{remote.rstrip('/')}/", f"{staging}/"]
    log.debug("%s", shlex.join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"rsync from {host}:{remote} failed (exit {r.returncode}): "
                         f"{r.stderr.strip()}\nIs the host reachable with ssh, and is the "
                         "daemon's state folder there (REMOTE=...)?")


def _place(src: Path, target: Path) -> Path | None:
    """Where src goes beside a different file of the same name: None when a renamed copy
    from an earlier run is already there, else the first free `<stem>-N` name."""
    for i in range(1, 10_000):
        candidate = target.with_name(f"{target.stem}-{i}{target.suffix}")
        if not candidate.exists():
            return candidate
        if filecmp.cmp(src, candidate, shallow=False):
            return None
    raise SystemExit(f"no free name next to {target}")


def merge(staging: Path, out: Path) -> dict[str, Counter]:
    """Copy the staged frames into out/<label>/ without overwriting anything."""
    stats = {"added": Counter(), "already": Counter(), "renamed": Counter()}
    for class_dir in sorted(p for p in staging.iterdir() if p.is_dir()):
        label = class_dir.name
        if label.startswith((".", "_")):
            continue
        for jpg in sorted(class_dir.glob("*.jpg")):
            dest = out / label / jpg.name
            if dest.exists():
                if filecmp.cmp(jpg, dest, shallow=False):
                    stats["already"][label] += 1
                    continue
                dest = _place(jpg, dest)
                if dest is None:
                    stats["already"][label] += 1
                    continue
                stats["renamed"][label] += 1
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(jpg, dest)
            side = jpg.with_suffix(".json")
            if side.exists() and not dest.with_suffix(".json").exists():
                shutil.copy2(side, dest.with_suffix(".json"))
            stats["added"][label] += 1
    return stats


def collect(host: str, out: Path, remote: str = REMOTE, ssh_opts: str = "") -> dict[str, Counter]:
    """Pull and merge; returns per-class counts of frames added, already there, renamed."""
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", host)
    staging = out / ".collect" / safe
    pull(host, remote, staging, ssh_opts)
    return merge(staging, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", required=True, help="ssh destination, e.g. pi@coral-1.local")
    ap.add_argument("--out", type=Path, default=Path("data"),
                    help="dataset folder to merge into (class subfolders; default data/)")
    ap.add_argument("--remote", default=REMOTE,
                    help=f"the device's dataset folder (default {REMOTE})")
    ap.add_argument("--ssh_opts", "--ssh-opts", dest="ssh_opts", default="",
                    help="extra ssh options, e.g. '-p 2222 -i ~/.ssh/coral'")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stats = collect(a.host, a.out, a.remote, a.ssh_opts)
    labels = sorted(set().union(*stats.values()))
    for label in labels:
        print(f"{label:24s} +{stats['added'][label]} new ({stats['renamed'][label]} renamed "
              f"to keep both), {stats['already'][label]} already there")
    total = sum(stats["added"].values())
    print(f"{total} frame(s) from {a.host} merged into {a.out}"
          + ("" if labels else " (the device has no labelled frames yet)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
