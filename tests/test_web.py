"""The daemon's web page over real HTTP: the password off loopback (an unauthenticated
request is refused), the live view and MJPEG stream from the pipeline, events, status,
the upload page answering like `classify --json`, labelling, and the guards."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from device.config import parse_config
from device.errors import ConfigError
from device.web.auth import Authorizer, credential, hash_password, verify_password

from .conftest import ROOT, Recorder, run_cli
from .webutil import DEMO, get_json, http, wait_until, web_daemon


def test_password_hash_roundtrip_and_headers():
    h = hash_password("s3cret")
    assert h.startswith("scrypt$") and "s3cret" not in h
    assert verify_password("s3cret", h) and not verify_password("s3cret!", h)
    assert credential("Bearer tok") == "tok"
    assert credential("Basic bWU6czNjcmV0") == "s3cret"  # me:s3cret
    assert credential("Basic !!!") is None and credential(None) is None
    auth = Authorizer(h)
    assert auth.allows("Bearer s3cret") and auth.allows("Bearer s3cret")  # second: cached
    assert not auth.allows("Bearer wrong") and not auth.allows(None)
    assert Authorizer("").allows(None)  # loopback without a password


def test_config_refuses_an_open_address_without_a_password():
    with pytest.raises(ConfigError, match="password_hash"):
        parse_config({"web": {"enabled": True, "address": "0.0.0.0"}})
    with pytest.raises(ConfigError, match="never put the password itself"):
        parse_config({"web": {"enabled": True, "password_hash": "hunter2"}})
    cfg = parse_config({"web": {"enabled": True, "address": "0.0.0.0",
                                "password_hash": hash_password("pw")}})
    assert cfg.web.address == "0.0.0.0"
    assert not parse_config({}).web.enabled  # off unless asked for


def test_unauthenticated_requests_are_refused_off_loopback(tmp_path, broker, daemon_factory):
    pw_hash = hash_password("open sesame")
    d, url, _ = web_daemon(tmp_path, broker.port, daemon_factory,
                           web={"address": "0.0.0.0", "password_hash": pw_hash})
    for path in ("/", "/api/status", "/api/live", "/stream.mjpg", "/api/frames", "/label"):
        status, headers, _ = http(url + path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Basic")
    status, _, _ = http(url + "/api/classify", b"\xff\xd8", password=None)
    assert status == 401
    assert http(url + "/api/status", password="wrong")[0] == 401
    assert http(url + "/api/status", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert get_json(url + "/api/status", password="open sesame")["device_id"] == "pi-web"
    assert http(url + "/api/live", headers={"Authorization": "Bearer open sesame"})[0] == 200
    # the address really is every interface: reach it by the host's own name too
    ip = socket.gethostbyname(socket.gethostname())
    port = url.rsplit(":", 1)[1]
    assert http(f"http://{ip}:{port}/api/status")[0] == 401
    assert "password required" in d.output() or "web page on" in d.output()


def test_live_view_events_status_and_guards(tmp_path, broker, daemon_factory):
    _d, url, _ = web_daemon(tmp_path, broker.port, daemon_factory, web={})
    first = wait_until(lambda: get_json(url + "/api/live")["seq"], 30, "a first frame")
    wait_until(lambda: get_json(url + "/api/live")["seq"] != first, 10, "a newer frame")
    live = get_json(url + "/api/live")
    assert live["top_k"] and live["top_k"][0]["label"] in ("empty", "note_5", "note_10",
                                                           "note_20")
    assert live["rois"] == [] and live["model"]["name"] == "demo-notes"
    # two MJPEG parts, each a JPEG, from the pipeline's frames
    with urllib.request.urlopen(url + "/stream.mjpg", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        data = b""
        while data.count(b"\xff\xd9") < 2:
            data += r.read1(65536)
    assert data.count(b"Content-Type: image/jpeg") >= 2 and b"\xff\xd8" in data
    events = wait_until(lambda: get_json(url + "/api/events")["events"], 30, "an event")
    ev = events[0]
    status, _headers, thumb = http(f"{url}/events/{ev['event_id']}.jpg")
    assert status == 200 and thumb[:2] == b"\xff\xd8"
    page = get_json(url + "/api/events")
    assert page["mode"] == "event" and sum(page["counts"].values()) >= 1
    st = get_json(url + "/api/status")
    assert st["state"] == "running" and st["frames"] > 0 and "capture" in st
    for path in ("/", "/upload", "/label", "/static/app.js", "/static/app.css"):
        assert http(url + path)[0] == 200, path
    # guards: DNS rebinding (a foreign Host name), cross-site POSTs, unknown paths, traversal
    assert http(url + "/api/status", headers={"Host": "evil.example:80"})[0] == 421
    assert http(url + "/api/frames", b'{"action": "delete", "ids": ["x"]}',
                headers={"X-Coral-Web": "0"})[0] == 403
    assert http(url + "/nope")[0] == 404
    assert http(url + "/frame?id=dataset/../../etc/passwd.jpg")[0] == 404
    assert http(url + "/api/frames", {"action": "delete", "ids": ["doubtful/../../x.jpg"]})[0] \
        == 400


def test_upload_answers_like_classify_json(tmp_path, broker, daemon_factory):
    _d, url, _ = web_daemon(tmp_path, broker.port, daemon_factory, web={})
    photo = sorted((tmp_path / "replay").iterdir())[5]  # a note in the slot
    wait_until(lambda: get_json(url + "/api/live")["seq"], 30, "the daemon running")
    status, _, body = http(url + "/api/classify?name=" + photo.name, photo.read_bytes())
    assert status == 200, body
    web = json.loads(body)
    r = run_cli("classify", "--json", "--model", str(DEMO), "--backend", "cpu", str(photo))
    cli = json.loads(r.stdout.splitlines()[0])
    assert web.keys() == {**cli, "image": photo.name}.keys()
    for key in ("label", "top_k", "model", "backend", "accepted", "ood_score", "reason"):
        assert web[key] == cli[key], key
    assert web["image"] == photo.name
    # not an image
    status, _, body = http(url + "/api/classify", b"not an image")
    assert status == 400 and b"not an image" in body
    # too large: refused from its Content-Length, before the body is read
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), 5) as s:
        s.sendall(b"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Coral-Web: 1\r\n"
                  b"Content-Length: %d\r\n\r\n" % (17 << 20))
        assert s.recv(4096).startswith(b"HTTP/1.1 413")
    # paused (cmd/pause): the page says so instead of waiting for an answer
    rec = Recorder(broker.port, "coral-classifier/pi-web/#")
    try:
        rec.client.publish("coral-classifier/pi-web/cmd/pause", b"", qos=1).wait_for_publish(5)
        rec.wait_for(lambda r: r.on("cmd/pause/reply"), 10, "paused")
        status, _, body = http(url + "/api/classify", photo.read_bytes())
        assert status == 409 and b"paused" in body
    finally:
        rec.close()


def listening_ports(pid: int) -> set[int]:
    """TCP ports a process listens on (its socket fds matched in /proc/net/tcp{,6})."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def test_disabled_web_page_listens_nowhere(tmp_path, broker, daemon_factory):
    d, _, _ = web_daemon(tmp_path, broker.port, daemon_factory, web=None)
    # set up (the web page would have been attached by now) and talking to the broker
    wait_until(lambda: "MQTT connected" in d.output(), 60, "the daemon started")
    assert d.proc.poll() is None and listening_ports(d.proc.pid) == set()
    assert "web page on" not in d.output()
    d.stop()
    d2, url, _ = web_daemon(tmp_path / "on", broker.port, daemon_factory, web={})
    assert listening_ports(d2.proc.pid) == {int(url.rsplit(":", 1)[1])}


def test_the_page_costs_far_less_than_a_tenth_of_a_millisecond_per_frame():
    from device.tools.bench_web import tap_cost

    cost = tap_cost(20_000)  # the results thread's only per-frame work for the page
    assert cost["added_ns"] < 100_000, cost  # 0.1 ms; measured ~1 µs


def test_live_summary_has_the_same_keys_before_the_first_frame():
    from device.web.live import LiveHub

    # a page or a test polling /api/live from the start reads regions before a frame exists
    before = LiveHub().summary()
    assert before["seq"] is None and before["regions"] == {} and before["top_k"] == []
    assert before.keys() >= {"rois", "mqtt", "verdict", "explanation", "accepted", "reason"}


def test_hash_tool_prints_a_hash_the_config_accepts():
    r = subprocess.run([sys.executable, "-m", "device.web.auth"], input="pa55 word\n",
                       capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 0, r.stderr
    stored = r.stdout.strip()
    assert verify_password("pa55 word", stored) and "pa55" not in stored
    parse_config({"web": {"enabled": True, "address": "0.0.0.0", "password_hash": stored}})
    r = subprocess.run([sys.executable, "-m", "device.web.auth"], input="\n",
                       capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 1 and "empty password" in r.stderr


def test_regions_are_outlined_and_captured_as_crops(tmp_path, broker, daemon_factory):
    import cv2
    import numpy as np

    rois = [{"name": "slot", "x": 0.0, "y": 0.0, "width": 0.5, "height": 1.0},
            {"name": "tray", "x": 0.5, "y": 0.5, "width": 0.5, "height": 0.5}]
    _d, url, state = web_daemon(tmp_path, broker.port, daemon_factory, web={},
                                camera_extra={"roi": rois})
    live = wait_until(lambda: (j := get_json(url + "/api/live"))["regions"].keys()
                      == {"slot", "tray"} and j, 30, "both regions classified")
    assert [r["name"] for r in live["rois"]] == ["slot", "tray"]
    with urllib.request.urlopen(url + "/stream.mjpg", timeout=10) as r:
        data = b""
        while data.count(b"\xff\xd9") < 1:
            data += r.read1(65536)
    start = data.index(b"\xff\xd8")
    frame = cv2.imdecode(np.frombuffer(data[start:data.index(b"\xff\xd9") + 2], np.uint8), 1)
    assert frame.shape[1] == 160  # the camera's width (under stream_width)
    # the outline colour (BGR 0, 200, 255) on the region's left edge
    assert (np.abs(frame[30:90, 0].astype(int) - (0, 200, 255)).sum(axis=1) < 120).mean() > 0.8
    status, _, body = http(url + "/api/capture", {"label": "_unlabelled", "frames": 1})
    assert status == 200, body
    folder = state / "dataset" / "_unlabelled"
    saved = wait_until(lambda: sorted(folder.glob("*.jpg")), 20, "a captured region")
    assert saved[0].stem.endswith(("_slot", "_tray"))
    shape = cv2.imread(str(saved[0])).shape
    assert shape in ((120, 80, 3), (60, 80, 3))  # the region's crop, not the whole frame
