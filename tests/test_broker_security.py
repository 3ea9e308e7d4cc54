"""The daemon against a real mosquitto with TLS (verified), passwords and the shipped ACL."""

import contextlib
import ssl
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest

from device.tools.synthetic import write_sequence

from .conftest import ROOT, Broker, Recorder, wait_until, write_config

ACL = ROOT / "device" / "mosquitto" / "acl"
DEMO = ROOT / "compiled_models" / "demo-notes"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=coral-test-ca", "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout",
            "server.key", "-out", "server.csr", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=d)
    passwd = d / "passwd"
    for i, (user, pw) in enumerate([("vend-7", "pw7"), ("vend-8", "pw8"),
                                    ("controller", "ctl")]):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(passwd),
                        user, pw], check=True, capture_output=True)
    (d / "pw7").write_text("pw7\n")
    (d / "wrong").write_text("nope\n")
    conf = (f"allow_anonymous false\npassword_file {passwd}\nacl_file {ACL}\n"
            f"cafile {d / 'ca.crt'}\ncertfile {d / 'server.crt'}\nkeyfile {d / 'server.key'}\n")
    # the base config's listener line comes first; TLS options apply to it
    b = Broker(d, conf)
    b.dir = d
    yield b
    b.stop()


def client(port, user, pw, ca):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-{time.monotonic()}")
    c.username_pw_set(user, pw)
    c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    return c


class SecureRecorder(Recorder):
    def __init__(self, port, topic, user, pw, ca):
        import threading

        self.messages = []
        self.cond = threading.Condition()
        self.client = client(port, user, pw, ca)
        self.client.on_message = self._on_message
        subscribed = threading.Event()  # SUBACK: from here on nothing published is missed
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "secure test client could not connect and subscribe"


def secure_config(tmp_path, b, password_file, device_id="vend-7"):
    replay = tmp_path / "replay"
    if not replay.exists():
        write_sequence(replay, ["note_5", "note_10"], gap=3, frames_per_object=4)
    return write_config(
        tmp_path / f"{device_id}-{password_file.name}.toml",
        camera={"type": "replay", "source": str(replay), "fps": 20, "loop": True},
        model={"path": str(DEMO), "backend": "cpu"},
        mqtt={"host": "127.0.0.1", "port": b.port, "device_id": device_id,
              "username": device_id, "password_file": str(password_file), "tls": True,
              "ca_file": str(b.dir / "ca.crt"), "status_interval": 1.0},
        decision={"mode": "event", "background_labels": ["empty"]})


def test_tls_password_acl(tmp_path, secure_broker, daemon_factory):
    b = secure_broker
    ca = b.dir / "ca.crt"
    ctl = SecureRecorder(b.port, "coral-classifier/#", "controller", "ctl", ca)
    spy = SecureRecorder(b.port, "coral-classifier/#", "vend-8", "pw8", ca)
    d = daemon_factory(secure_config(tmp_path, b, b.dir / "pw7"))
    try:
        ctl.wait_for(lambda r: len(r.on("vend-7/event")) >= 2, 60, "events over TLS")
        # the controller may command; the reply comes back
        c = client(b.port, "controller", "ctl", ca)
        c.connect("127.0.0.1", b.port)
        c.loop_start()
        c.publish("coral-classifier/vend-7/cmd/status", b"{}", qos=1).wait_for_publish(5)
        ctl.wait_for(lambda r: r.on("vend-7/cmd/status/reply"), 10, "reply to controller")
        c.loop_stop()
        c.disconnect()
        # another device may neither read vend-7's topics nor command it
        intruder = client(b.port, "vend-8", "pw8", ca)
        intruder.connect("127.0.0.1", b.port)
        intruder.loop_start()
        intruder.publish("coral-classifier/vend-7/cmd/pause", b"{}", qos=1).wait_for_publish(5)
        intruder.loop_stop()
        intruder.disconnect()
        # the daemon takes commands in order: a reply to a later one means the pause, had
        # the broker let it through, would have been answered by now
        c = client(b.port, "controller", "ctl", ca)
        c.connect("127.0.0.1", b.port)
        c.loop_start()
        c.publish("coral-classifier/vend-7/cmd/status", b"{}", qos=1).wait_for_publish(5)
        ctl.wait_for(lambda r: len(r.on("vend-7/cmd/status/reply")) >= 2, 10, "second reply")
        c.loop_stop()
        c.disconnect()
        assert not ctl.on("vend-7/cmd/pause/reply"), "the ACL let another device command vend-7"
        assert ctl.json_on("vend-7/status")[-1]["state"] == "running"
        assert not [t for t, _, _ in spy.messages if t.startswith("coral-classifier/vend-7/")]
        assert d.proc.poll() is None
    finally:
        ctl.close()
        spy.close()


def test_wrong_password_is_reported_and_daemon_keeps_running(tmp_path, secure_broker,
                                                            daemon_factory):
    d = daemon_factory(secure_config(tmp_path, secure_broker, secure_broker.dir / "wrong"))
    deadline = time.monotonic() + 20
    while "refused the connection" not in d.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "refused the connection" in d.output() and "username" in d.output()
    assert d.proc.poll() is None  # it keeps classifying and storing events meanwhile


def test_untrusted_broker_certificate_is_rejected(tmp_path, secure_broker, daemon_factory):
    cfg = secure_config(tmp_path, secure_broker, secure_broker.dir / "pw7", device_id="vend-7")
    other_ca = tmp_path / "other-ca.crt"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=x",
            "-keyout", str(tmp_path / "o.key"), "-out", str(other_ca), cwd=tmp_path)
    cfg.write_text(cfg.read_text().replace(str(secure_broker.dir / "ca.crt"), str(other_ca)))
    ctl = SecureRecorder(secure_broker.port, "coral-classifier/vend-7/availability",
                         "controller", "ctl", secure_broker.dir / "ca.crt")
    attempts = secure_broker.log.read_text().count("New connection from")
    d = daemon_factory(cfg)
    try:
        wait_until(lambda: "certificate is not trusted" in d.output(), 60, "the TLS failure")
        # and it keeps retrying (two more TLS attempts at the broker) without repeating it
        seen = secure_broker.log.read_text().count("New connection from")
        wait_until(lambda: secure_broker.log.read_text().count("New connection from")
                   >= max(seen, attempts + 1) + 2, 60, "the daemon to retry twice")
        assert d.proc.poll() is None
        assert b"online" not in [p for p in ctl.on("availability")][-1:]
        out = d.output()
        assert "certificate is not trusted" in out and "mqtt.ca_file" in out, out[-1500:]
        assert out.count("certificate is not trusted") == 1  # once, not per retry
        assert "Client is not connected" not in out
    finally:
        ctl.close()


def test_tls_host_name_mismatch_is_named_as_such(tmp_path, secure_broker):
    """A certificate from the right CA for another name: the advice is the host name, not
    mqtt.ca_file (a real TLS server on loopback presents it)."""
    import socket
    import threading

    from device.config import MqttConfig
    from device.mqtt.client import diagnose_connection

    d = secure_broker.dir
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=other.example", "-keyout",
            str(tmp_path / "o.key"), "-out", str(tmp_path / "o.csr"), cwd=tmp_path)
    (tmp_path / "o.ext").write_text("subjectAltName=DNS:other.example\n")
    openssl("x509", "-req", "-in", str(tmp_path / "o.csr"), "-CA", str(d / "ca.crt"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "1", "-extfile",
            str(tmp_path / "o.ext"), "-out", str(tmp_path / "o.crt"), cwd=tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "o.crt", tmp_path / "o.key")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve_one() -> None:
        conn, _ = server.accept()
        with contextlib.suppress(ssl.SSLError, OSError):
            ctx.wrap_socket(conn, server_side=True).close()

    t = threading.Thread(target=serve_one, daemon=True)
    t.start()
    try:
        why = diagnose_connection(MqttConfig(host="127.0.0.1", port=port, tls=True,
                                             ca_file=str(d / "ca.crt")))
    finally:
        server.close()
    assert "does not name '127.0.0.1'" in why and "mqtt.host" in why, why
    assert "mqtt.ca_file" not in why
