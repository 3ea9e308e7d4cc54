"""After 65,535 messages on one connection paho's 16-bit mid wraps. The old sender kept
every PUBACK mid it had not registered (status, replies, every QoS-0 result) and, after
the wrap, deleted an event on a stale one before the broker had it; a SIGKILL then lost
the event. Reproduced with the daemon's own MQTT side (publisher, sender, outbox) in a
real process, a real mosquitto, and a TCP proxy that holds the event's packet back."""

from __future__ import annotations

import select
import signal
import socket
import sqlite3
import subprocess
import threading
import time

from .conftest import PYTHON, ROOT, Recorder

CHILD = r"""
import sys, threading, time
from device.config import MqttConfig
from device.mqtt.outbox import Outbox
from device.mqtt.publisher import MqttPublisher
from device.mqtt.sender import EventSender

port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
pub = MqttPublisher(MqttConfig(host="127.0.0.1", port=port, device_id="wrap"), "wrap")
box = Outbox(path)
sender = EventSender(box, pub.publish_qos1, pub.connected)
pub.on_connected.append(sender.reconnected)
pub.on_puback = sender.on_puback
sender.start()
pub.start()
assert pub.wait_connected(10)
for i in range(n):  # results at QoS 0, and a QoS-1 status now and then
    info = pub.client.publish("coral-classifier/wrap/result", b"r", qos=1 if i % 97 == 0 else 0)
    if i % 2000 == 0:
        info.wait_for_publish(10)
info.wait_for_publish(10)
print("mid", pub.client._last_mid, flush=True)
sys.stdin.readline()  # the test holds the proxy now
box.add("coral-classifier/wrap/event", b'{"event": 1}', "note")
sender.notify()
while sender.sent < 1:
    time.sleep(0.01)
print("sent", flush=True)
time.sleep(3600)
"""


class HoldingProxy(threading.Thread):
    """Forwards one TCP connection; `hold` stops client→broker bytes (kept, not sent)."""

    def __init__(self, target_port: int):
        super().__init__(daemon=True)
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.hold = threading.Event()
        self.held = 0
        self.stop = threading.Event()

    def run(self) -> None:
        client, _ = self.listener.accept()
        broker = socket.create_connection(("127.0.0.1", self.target))
        while not self.stop.is_set():
            ready, _, _ = select.select([client, broker], [], [], 0.1)
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                if s is client:
                    if self.hold.is_set():
                        self.held += len(data)
                    else:
                        broker.sendall(data)
                else:
                    client.sendall(data)


def test_event_survives_mid_wrap_held_packet_and_sigkill(tmp_path, broker):
    proxy = HoldingProxy(broker.port)
    proxy.start()
    outbox = tmp_path / "outbox.sqlite"
    rec = Recorder(broker.port, "coral-classifier/wrap/event")
    child = subprocess.Popen([PYTHON, "-c", CHILD, str(proxy.port), str(outbox), "70000"],
                             cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.startswith("mid"), child.stderr.read() if child.poll() else line
        assert int(line.split()[1]) < 65535 - 60000, "the mid counter wrapped"
        proxy.hold.set()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "sent"
        deadline = time.monotonic() + 5
        while proxy.held == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.held > 0, "the event's PUBLISH reached the proxy"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        db = sqlite3.connect(outbox)
        rows = db.execute("SELECT payload FROM outbox").fetchall()
        assert rows == [(b'{"event": 1}',)], "the event the broker never got is still stored"
        assert not rec.on("/event")
    finally:
        proxy.stop.set()
        if child.poll() is None:
            child.kill()
        rec.close()
