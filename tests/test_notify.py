"""sd_notify against a real datagram socket through NOTIFY_SOCKET."""

import socket

from device.notify import Notifier

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
