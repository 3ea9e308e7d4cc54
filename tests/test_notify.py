"""sd_notify against a real datagram socket through NOTIFY_SOCKET."""

import contextlib
import socket

from device.daemon.notify import Notifier

from .conftest import write_config


def test_notifier_is_noop_without_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    n.ready()  # nothing to send to, nothing raised


def test_notifier_sends_datagrams(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        n = Notifier(path)
        n.ready("up")
        n.watchdog()
        assert s.recv(100) == b"READY=1\nSTATUS=up"
        assert s.recv(100) == b"WATCHDOG=1"


def test_daemon_notifies_ready_watchdog_stopping(tmp_path, broker, daemon_factory):
    """The real daemon: READY once set up, WATCHDOG per frame, STOPPING at the end."""
    import cv2
    import numpy as np

    from .conftest import need_shared
    from .test_daemon import LABELS, MODEL

    need_shared(MODEL, LABELS)
    replay = tmp_path / "replay"
    replay.mkdir()
    for i in range(3):
        cv2.imwrite(str(replay / f"{i}.png"), np.full((32, 32, 3), i * 60, np.uint8))
    cfg = write_config(tmp_path / "n.toml",
                       camera={"type": "replay", "source": str(replay), "fps": 50, "loop": False},
                       model={"path": str(MODEL), "labels": str(LABELS), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "n1"})
    path = str(tmp_path / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        s.settimeout(30)
        d = daemon_factory(cfg, env={"NOTIFY_SOCKET": path})
        got = []
        while not got or not got[-1].startswith("STOPPING=1"):
            got.append(s.recv(1000).decode())
        assert d.proc.wait(30) == 0
    assert got[0].startswith("READY=1")
    assert got.count("WATCHDOG=1") == 3  # one per frame that really flowed
    assert got.index("WATCHDOG=1") > 0


class StallingMjpegServer:
    """An MJPEG-over-HTTP camera that sends `frames` frames, then goes silent (stuck)."""

    def __init__(self, frames: int):
        import http.server
        import threading

        import cv2
        import numpy as np

        jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))[1].tobytes()
        self.release = threading.Event()
        release = self.release

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for _ in range(frames):
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                    self.wfile.flush()
                release.wait(60)  # the camera hangs: connection open, nothing sent

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()


def test_watchdog_stops_when_the_camera_stalls(tmp_path, broker, daemon_factory):
    """Frames flow -> WATCHDOG=1; the camera hangs -> STATUS keeps coming, WATCHDOG stops,
    so systemd (WatchdogSec) would restart the daemon."""
    import time

    from .conftest import need_shared
    from .test_daemon import LABELS, MODEL

    need_shared(MODEL, LABELS)
    cam = StallingMjpegServer(frames=40)
    cfg = write_config(tmp_path / "s.toml",
                       camera={"type": "opencv", "source": cam.url, "fps": 50},
                       model={"path": str(MODEL), "labels": str(LABELS), "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "stall",
                             "status_interval": 0.3})
    path = str(tmp_path / "s.sock")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(path)
            s.settimeout(30)
            d = daemon_factory(cfg, env={"NOTIFY_SOCKET": path})
            s.settimeout(0.2)
            got: list[tuple[float, str]] = []
            last_watchdog = None
            deadline = time.monotonic() + 40
            # listen until the watchdog has been silent for 3 s (the camera is stuck)
            while time.monotonic() < deadline and (
                    last_watchdog is None or time.monotonic() - last_watchdog < 3):
                try:
                    msg = s.recv(1000).decode()
                except TimeoutError:
                    continue
                got.append((time.monotonic(), msg))
                if msg == "WATCHDOG=1":
                    last_watchdog = got[-1][0]
            watchdogs = [m for _, m in got if m == "WATCHDOG=1"]
            assert 5 <= len(watchdogs) <= 40, len(watchdogs)  # at most one per real frame
            silence = [m for t, m in got if t > last_watchdog]
            assert sum(m.startswith("STATUS=") for m in silence) >= 2, silence
            assert d.proc.poll() is None, "the daemon stays up: systemd's watchdog decides"
    finally:
        cam.close()


def test_watchdog_stops_when_mqtt_is_gone_too_long(tmp_path, daemon_factory):
    """Frames keep flowing but the broker is gone longer than mqtt.max_disconnected: the
    watchdog stops (systemd restarts the whole daemon), STATUS keeps coming."""
    import time

    from device.tools.synthetic import write_sequence

    from .conftest import ROOT, Broker

    b = Broker(tmp_path)
    replay = tmp_path / "replay"
    write_sequence(replay, ["note_5"], gap=2, frames_per_object=3, seed=2)
    cfg = write_config(tmp_path / "w.toml",
                       camera={"type": "replay", "source": str(replay), "fps": 30},
                       model={"path": str(ROOT / "compiled_models" / "demo-notes"),
                              "backend": "cpu"},
                       mqtt={"host": "127.0.0.1", "port": b.port, "device_id": "wd",
                             "status_interval": 0.3, "max_disconnected": 1.0})
    path = str(tmp_path / "w.sock")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(path)
            s.settimeout(0.2)
            d = daemon_factory(cfg, env={"NOTIFY_SOCKET": path})
            got: list[tuple[float, str]] = []
            stopped_at = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    got.append((time.monotonic(), s.recv(1000).decode()))
                dogs = [t for t, m in got if m == "WATCHDOG=1"]
                if stopped_at is None and len(dogs) >= 10:
                    b.stop()
                    stopped_at = time.monotonic()
                if stopped_at and time.monotonic() - stopped_at > 4:
                    break
            assert stopped_at is not None, got[-5:]
            late = [t for t, m in got if m == "WATCHDOG=1" and t > stopped_at + 2.0]
            status_late = [m for t, m in got if m.startswith("STATUS=") and t > stopped_at + 2]
            assert not late, "the watchdog must starve once MQTT is gone for too long"
            assert status_late, "the daemon itself keeps running"
            assert d.proc.poll() is None
    finally:
        b.stop()
