"""A bundle as a pull update: packed into one archive, described by a signed envelope
(url, sha256, size, version, devices or fleet, not_before: what a device checks before it
fetches a byte), served over HTTP from the workstation (with Range requests, so an
interrupted download resumes)."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import logging
import os
import re
import tarfile
import threading
import time
from pathlib import Path
from typing import ClassVar

log = logging.getLogger("host_training.fleet.rollout")


def pack(bundle_dir: Path, out: Path) -> str:
    """bundle_dir's files at the top level of a .tar.gz (regular files only); its sha256."""
    with tarfile.open(out, "w:gz") as tar:
        for p in sorted(bundle_dir.rglob("*")):
            if p.is_file() and not p.is_symlink():
                info = tar.gettarinfo(str(p), arcname=p.relative_to(bundle_dir).as_posix())
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(p, "rb") as f:
                    tar.addfile(info, f)
    h = hashlib.sha256()
    with open(out, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sign(key_file: Path, manifest: bytes) -> str:
    """Ed25519 signature (base64) of the manifest's bytes with a PEM private key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{key_file} is not an Ed25519 private key")
    return base64.b64encode(key.sign(manifest)).decode()


def signed_request(key_file: Path, *, url: str, sha256: str, size: int, version: str,
                   devices: list[str] | None = None, fleet: str = "",
                   not_before: float | None = None, allow_downgrade: bool = False,
                   request_id: str = "") -> dict:
    """cmd/update's payload: {envelope, signature, id}. The envelope is JSON text signed as
    it is sent, so the device verifies exactly those bytes. not_before defaults to five
    minutes ago (a device clock running a little behind still accepts it)."""
    fields: dict = {"url": url, "sha256": sha256, "size": size, "version": version,
                    "not_before": int(time.time() - 300 if not_before is None else not_before)}
    if devices:
        fields["devices"] = list(devices)
    if fleet:
        fields["fleet"] = fleet
    if allow_downgrade:
        fields["allow_downgrade"] = True
    envelope = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    out = {"envelope": envelope, "signature": sign(key_file, envelope.encode())}
    return {**out, "id": request_id} if request_id else out


def public_key_b64(key_file: Path) -> str:
    """The base64 public half of a PEM Ed25519 private key: what update.public_key takes."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


class _Handler(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, Path]] = {}
    requests: ClassVar[list[tuple[str, str]]] = []  # (path, Range header) seen, for tests

    def do_GET(self) -> None:
        path = self.files.get(self.path)
        self.requests.append((self.path, self.headers.get("Range", "")))
        if path is None:
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m:
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0 and (chunk := f.read(min(left, 1 << 16))):
                self.wfile.write(chunk)
                left -= len(chunk)

    def log_message(self, fmt: str, *args) -> None:
        log.debug("http: " + fmt, *args)


class BundleServer:
    """Serves files under random paths on address:port (0 = any free port)."""

    def __init__(self, address: str = "127.0.0.1", port: int = 0):
        handler = type("Handler", (_Handler,), {"files": {}, "requests": []})
        self.httpd = http.server.ThreadingHTTPServer((address, port), handler)
        self.handler = handler
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                       name="bundle-server")
        self.thread.start()

    def add(self, path: Path) -> str:
        """Serve path; returns its URL path (unguessable: a random token in it)."""
        url = f"/{os.urandom(8).hex()}/{path.name}"
        self.handler.files[url] = path
        return url

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self.handler.requests

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
