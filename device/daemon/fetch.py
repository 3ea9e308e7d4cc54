"""Pull-update helpers: download with resume and a size limit, unpack a bundle archive
safely, check the Ed25519 signature over its manifest. Pure functions over files."""

from __future__ import annotations

import base64
import logging
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from device.errors import CoralError

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


class UpdateError(CoralError):
    """An update that cannot go on; the message says why and what to send instead."""

    exit_code = 6


def source_kind(url: str) -> str:
    """'https', 'http' or 'file' (a file:// URL or an absolute path on the device)."""
    if url.startswith("/"):
        return "file"
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("https", "http", "file"):
        raise UpdateError(f"url {url[:80]!r}: give an https:// URL or an absolute path on "
                          "the device")
    return scheme


def fetch(url: str, dest: Path, max_bytes: int, timeout: float,
          progress: Callable[[int, int], None], attempts: int = 5) -> int:
    """Download url into dest, resuming what dest already holds (HTTP Range), at most
    max_bytes. Returns the size. Raises UpdateError."""
    if source_kind(url) == "file":
        src = Path(urllib.parse.urlsplit(url).path if url.startswith("file:") else url)
        try:
            size = src.stat().st_size
        except OSError as exc:
            raise UpdateError(f"{src} cannot be read on the device: {exc}") from None
        if size > max_bytes:
            raise UpdateError(f"{src} is {size} bytes, over update.max_bytes ({max_bytes})")
        shutil.copyfile(src, dest)
        progress(size, size)
        return size
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            return _http_once(url, dest, max_bytes, timeout, progress)
        except (OSError, urllib.error.URLError, TimeoutError) as exc:
            last = exc
            log.warning("download of %s interrupted (%s); resuming", url, exc)
            time.sleep(min(8.0, 0.5 * 2 ** attempt))
    raise UpdateError(f"download of {url} failed {attempts} times: {last}")


def _http_once(url: str, dest: Path, max_bytes: int, timeout: float,
               progress: Callable[[int, int], None]) -> int:
    have = dest.stat().st_size if dest.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the file is complete
            return have
        raise UpdateError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    with resp:
        if resp.status == 200:
            have = 0  # the server ignored the range: start over
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else 0
        if total > max_bytes:
            raise UpdateError(f"{url} is {total} bytes, over update.max_bytes ({max_bytes})")
        with open(dest, "ab" if have else "wb") as f:
            size = have
            last_report = 0.0
            while chunk := resp.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise UpdateError(f"{url} sent more than update.max_bytes ({max_bytes})")
                f.write(chunk)
                now = time.monotonic()
                if now - last_report >= 1.0:
                    progress(size, total)
                    last_report = now
        if total and size < total:
            raise OSError(f"connection closed after {size} of {total} bytes")
    progress(size, total or size)
    return size


def unpack(archive: Path, dest: Path, max_bytes: int) -> None:
    """Unpack a bundle archive (.tar or .tar.gz: the bundle's files at its top level) into
    dest: regular files and folders only, nothing outside dest, bounded in size."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            if sum(m.size for m in members) > max_bytes:
                raise UpdateError(f"the archive unpacks to more than update.max_bytes "
                                  f"({max_bytes})")
            bad = [m.name for m in members if not (m.isfile() or m.isdir())]
            if bad:
                raise UpdateError(f"the archive holds links or devices ({bad[0]!r}): a bundle "
                                  "is regular files only")
            dest.mkdir(parents=True)
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UpdateError(f"the archive cannot be unpacked: {exc}") from None
    # the store is shared with deploy users (group-writable, setgid folder)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o2775 if p.is_dir() else 0o664)


def load_public_key(text: str):
    """An Ed25519 public key: base64 of the 32 raw bytes, or a PEM file's path/contents."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    text = text.strip()
    if text.startswith("/"):
        text = Path(text).read_text()
    if "BEGIN PUBLIC KEY" in text:
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise UpdateError("update.public_key is not an Ed25519 key")
        return key
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))


def check_signature(public_key: str, manifest: bytes, signature: str) -> None:
    """Ed25519 over the bundle's manifest.json bytes (which hold every file's sha256)."""
    try:
        from cryptography.exceptions import InvalidSignature
    except ImportError:
        raise UpdateError("update.public_key is set but the `cryptography` library is "
                          "missing: apt install python3-cryptography") from None
    try:
        key = load_public_key(public_key)
        key.verify(base64.b64decode(signature, validate=True), manifest)
    except InvalidSignature:
        raise UpdateError("bad signature: the bundle's manifest was not signed by the key "
                          "in update.public_key") from None
    except (ValueError, OSError) as exc:
        raise UpdateError(f"the signature or update.public_key cannot be read: {exc}") from None
