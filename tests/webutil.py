"""Helpers for the web page and capture tests: a real daemon (replay camera, the demo
bundle on the CPU) with [web] and [capture] set, and small HTTP calls."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

from device.tools.demo import free_port, wait_port
from device.tools.synthetic import NOTES, write_sequence

from .conftest import ROOT, wait_until, write_config  # noqa: F401 (wait_until: for the web tests)

DEMO = ROOT / "compiled_models" / "demo-notes"


def replay(folder: Path, passes=None) -> Path:
    """Synthetic notes passing a slot, empty frames between them."""
    write_sequence(folder, passes=passes or [*NOTES], gap=3, frames_per_object=5)
    return folder


def web_daemon(tmp_path: Path, broker_port: int, daemon_factory, web: dict | None = None,
               capture: dict | None = None, decision: dict | None = None, fps: float = 10,
               replay_dir: Path | None = None, wait: bool = True,
               camera_extra: dict | None = None):
    """Start the daemon; returns (process, base URL, state folder)."""
    port = free_port()
    folder = replay_dir or replay(tmp_path / "replay")
    sections = {"decision": {"mode": "event", "background_labels": ["empty"],
                             **(decision or {})}}
    if web is not None:
        sections["web"] = {"enabled": True, "port": port, **web}
    if capture is not None:
        sections["capture"] = capture
    cfg = write_config(tmp_path / "d.toml",
                       camera={"type": "replay", "source": str(folder), "fps": fps,
                               **(camera_extra or {})},
                       model={"path": str(DEMO), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": broker_port, "device_id": "pi-web",
                             "status_interval": 0.5}, **sections)
    d = daemon_factory(cfg)
    if web is not None and wait:
        wait_port(port, 60)
    return d, f"http://127.0.0.1:{port}", tmp_path / "state"


def http(url: str, body: bytes | dict | None = None, headers: dict | None = None,
         password: str | None = None, timeout: float = 20) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request; POST when body is given."""
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        hdrs.setdefault("X-Coral-Web", "1")
    if password is not None:
        hdrs["Authorization"] = "Basic " + base64.b64encode(f"me:{password}".encode()).decode()
    req = urllib.request.Request(url, data=data, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get_json(url: str, **kw) -> dict:
    status, _, body = http(url, **kw)
    assert status == 200, (status, body[:300])
    return json.loads(body)
