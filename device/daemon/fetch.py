"""Pull-update download, bounded every way a hostile source can push: regular files only
for `file`, the size enforced while copying, redirects re-checked against
update.allowed_schemes, a deadline over the whole download, a minimum rate, and a
free-space reserve checked before and during. HTTP resumes with Range requests."""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import ssl
import stat
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from device.errors import CoralError

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
SPACE_EVERY = 1 << 20  # bytes between free-space checks while writing
MAX_REDIRECTS = 5
Progress = Callable[[int, int], None]


class UpdateError(CoralError):
    """An update that cannot go on; the message says why and what to send instead."""

    exit_code = 6


@dataclass(frozen=True)
class Limits:
    """What one download may take. size: the archive's size when the request gives it
    (the download must be exactly that), else 0 and max_bytes bounds it."""

    max_bytes: int
    size: int
    timeout: float
    min_rate: int
    deadline_s: float
    reserve: int
    schemes: tuple[str, ...]
    deadline: float = 0.0  # time.monotonic() by which the download must be done

    @property
    def limit(self) -> int:
        return self.size or self.max_bytes


def source_kind(url: str) -> str:
    """'https', 'http' or 'file' (a file:// URL or an absolute path on the device)."""
    if url.startswith("/"):
        return "file"
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("https", "http", "file"):
        raise UpdateError(f"url {url[:80]!r}: give an https:// URL or an absolute path on "
                          "the device")
    return scheme


def check_space(folder: Path, need: int, reserve: int) -> None:
    """Refuse when writing `need` more bytes would eat into the reserve."""
    free = shutil.disk_usage(folder).free
    if free - need < reserve:
        raise UpdateError(f"not enough free space in {folder}: {free >> 20} MB free and "
                          f"update.reserve_bytes keeps {reserve >> 20} MB for events; free "
                          "space or send a smaller bundle. Nothing was changed")


def fetch(url: str, dest: Path, limits: Limits, progress: Progress, attempts: int = 5) -> int:
    """Download url into dest (resuming within this call's attempts). Returns the size.
    Raises UpdateError; dest may be left partial (the caller removes it)."""
    if source_kind(url) == "file":
        return _copy_file(Path(urllib.parse.urlsplit(url).path if url.startswith("file:")
                               else url), dest, limits, progress)
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            return _http_once(url, dest, limits, progress)
        except ssl.SSLCertVerificationError as exc:
            raise UpdateError(f"{url[:200]}: the server's certificate is not trusted "
                              f"({exc.verify_message})") from None
        except (OSError, http.client.HTTPException) as exc:
            last = exc
            wait = min(8.0, 0.5 * 2 ** attempt)
            if time.monotonic() + wait >= limits.deadline:
                break
            log.warning("download of %s interrupted (%s); resuming", url, exc)
            time.sleep(wait)
    if time.monotonic() + 1 >= limits.deadline:
        raise UpdateError(f"download of {url[:200]} did not finish within update.deadline "
                          f"({limits.deadline_s:.0f} s): {last}")
    raise UpdateError(f"download of {url[:200]} failed {attempts} times: {last}")


def _copy_file(src: Path, dest: Path, limits: Limits, progress: Progress) -> int:
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise UpdateError(f"{src} cannot be read on the device: {exc.strerror}") from None
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UpdateError(f"{src} is not a regular file: an update is a bundle archive")
        if st.st_size > limits.limit:
            raise UpdateError(f"{src} is larger than "
                              + ("the request's size" if limits.size else
                                 f"update.max_bytes ({limits.max_bytes})"))
        check_space(dest.parent, st.st_size, limits.reserve)
        with open(dest, "wb") as out:
            size = _copy(lambda _t: f.read(CHUNK), out, 0, limits, st.st_size, progress,
                         str(src))
    progress(size, size)
    return size


def _open(url: str, headers: dict[str, str], limits: Limits):
    """GET url, following redirects only to allowed schemes (https → http is refused when
    http is not allowed; never to a file). Returns (connection, socket, response)."""
    for _ in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        kind = parts.scheme.lower()
        if kind not in ("http", "https") or kind not in limits.schemes:
            raise UpdateError(f"redirected to a {kind or 'relative'!r} URL, which update."
                              f"allowed_schemes ({list(limits.schemes)}) does not allow: "
                              "nothing was fetched from it")
        wait = max(0.1, min(limits.timeout, limits.deadline - time.monotonic()))
        if kind == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=wait,
                context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=wait)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", path, headers=headers)
        sock = conn.sock  # kept: getresponse() drops it from conn when the reply closes
        resp = conn.getresponse()
        if resp.status in (301, 302, 303, 307, 308):
            location = resp.getheader("Location", "")
            resp.close()
            conn.close()
            url = urllib.parse.urljoin(url, location)
            log.info("update redirected to %s", url[:200])
            continue
        return conn, sock, resp
    raise UpdateError(f"more than {MAX_REDIRECTS} redirects: give the archive's final URL")


def _http_once(url: str, dest: Path, limits: Limits, progress: Progress) -> int:
    have = dest.stat().st_size if dest.exists() else 0
    conn, sock, resp = _open(url, {"Range": f"bytes={have}-"} if have else {}, limits)
    try:
        if resp.status == 416 and have:  # nothing left to fetch: the file is complete
            return have
        if resp.status not in (200, 206):
            raise UpdateError(f"{url[:200]}: HTTP {resp.status} {resp.reason[:80]}")
        if resp.status == 200:
            have = 0  # the server ignored the range: start over
        length = resp.getheader("Content-Length", "")
        total = have + int(length) if length.isdigit() else 0
        if total > limits.limit or (limits.size and total and total != limits.size):
            raise UpdateError(f"{url[:200]} offers {total} bytes; "
                              + (f"the request says {limits.size}" if limits.size else
                                 f"update.max_bytes is {limits.max_bytes}"))
        expected = total or limits.size  # unknown: checked while writing
        check_space(dest.parent, expected - have if expected else 0, limits.reserve)

        def read(wait: float) -> bytes:
            if sock is not None:
                sock.settimeout(wait)
            return resp.read1(CHUNK)

        with open(dest, "ab" if have else "wb") as f:
            size = _copy(read, f, have, limits, total, progress, url[:200])
        if (total and size < total) or (limits.size and size < limits.size):
            raise OSError(f"connection closed after {size} of {total or limits.size} bytes")
    finally:
        resp.close()
        conn.close()
    progress(size, total or size)
    return size


def _copy(read: Callable[[float], bytes], f, have: int, limits: Limits, total: int,
          progress: Progress, where: str) -> int:
    """read(wait) → f until EOF, within the size limit, the deadline, the minimum rate
    (measured over each update.timeout window) and the free-space reserve."""
    size, checked, last_report = have, have, 0.0
    window_start, window_bytes = time.monotonic(), 0
    while True:
        left = limits.deadline - time.monotonic()
        if left <= 0:
            raise UpdateError(f"{where}: not done within update.deadline "
                              f"({limits.deadline_s:.0f} s)")
        chunk = read(min(limits.timeout, left))
        if not chunk:
            return size
        size += len(chunk)
        if size > limits.limit:
            raise UpdateError(f"{where} sent more than "
                              + (f"the request's size ({limits.size})" if limits.size else
                                 f"update.max_bytes ({limits.max_bytes})"))
        f.write(chunk)
        if size - checked >= SPACE_EVERY:
            f.flush()
            check_space(Path(f.name).parent, 0, limits.reserve)
            checked = size
        window_bytes += len(chunk)
        now = time.monotonic()
        if now - window_start >= limits.timeout:
            rate = window_bytes / (now - window_start)
            if rate < limits.min_rate:
                raise UpdateError(f"{where} is sending {rate:.0f} bytes/s, slower than "
                                  f"update.min_rate ({limits.min_rate}): given up")
            window_start, window_bytes = now, 0
        if now - last_report >= 1.0:
            progress(size, total)
            last_report = now
