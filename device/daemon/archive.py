"""Unpack a bundle archive that already passed its signature and sha256 checks, bounded
anyway: at most update.max_files members read (lazily: a bomb of empty files stops at the
limit), their total size, free space, and regular files and folders only, inside dest."""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

from device.daemon.fetch import UpdateError, check_space


def unpack(archive: Path, dest: Path, max_bytes: int, max_files: int, reserve: int) -> None:
    """Unpack a .tar or .tar.gz (the bundle's files at its top level) into dest."""
    try:
        with tarfile.open(archive) as tar:
            members, total = [], 0
            for m in tar:
                members.append(m)
                if len(members) > max_files:
                    raise UpdateError(f"the archive holds more than update.max_files "
                                      f"({max_files}) files: a bundle has a few")
                if not (m.isfile() or m.isdir()):
                    raise UpdateError(f"the archive holds links or devices ({m.name[:80]!r}):"
                                      " a bundle is regular files only")
                path = PurePosixPath(m.name)
                if path.is_absolute() or ".." in path.parts:
                    raise UpdateError(f"the archive holds a path outside the bundle "
                                      f"({m.name[:80]!r})")
                total += m.size
                if total > max_bytes:
                    raise UpdateError(f"the archive unpacks to more than {max_bytes} bytes")
            check_space(dest.parent, total, reserve)
            dest.mkdir(parents=True)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UpdateError(f"the archive cannot be unpacked: {exc}") from None
    # the store is shared with deploy users (group-writable, setgid folder)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o2775 if p.is_dir() else 0o664)
