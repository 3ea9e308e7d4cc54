"""The Publisher interface and its MQTT implementation (paho-mqtt 2.x).

Topics under <topic_prefix>/<device_id>/: availability (retained online / last-will
offline / stopped), status (retained JSON), result (JSON per frame), and cmd/<name>
for commands with replies on cmd/<name>/reply.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, Protocol

from device import messages
from device.config import MqttConfig
from device.errors import ConfigError

log = logging.getLogger(__name__)

CommandHandler = Callable[[str, Any], dict[str, Any] | None]


class Publisher(Protocol):
    def publish(self, topic: str, payload: dict[str, Any] | bytes, *, qos: int = 0,
                retain: bool = False) -> None: ...

    def close(self) -> None: ...


class _QuietPaho(logging.Filter):
    """paho 2.2's network thread logs "Client is not connected" as an ERROR whenever it
    loops without a socket (while reconnecting, at shutdown): noise, not a fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


def diagnose_connection(cfg: MqttConfig, timeout: float = 5.0) -> str:
    """Why a connection fails, in words a user can act on (paho only says it failed)."""
    try:
        sock = socket.create_connection((cfg.host, cfg.port), timeout)
    except OSError as exc:
        return (f"cannot reach the broker at {cfg.host}:{cfg.port} ({exc}): is mosquitto "
                "running there and the port open?")
    with sock:
        if not cfg.tls:
            return ""
        ctx = ssl.create_default_context(cafile=cfg.ca_file or None)
        if cfg.tls_insecure:
            ctx.check_hostname = False
        try:
            with ctx.wrap_socket(sock, server_hostname=cfg.host):
                return ""
        except ssl.SSLCertVerificationError as exc:
            return (f"TLS: the broker's certificate is not trusted ({exc.verify_message}): "
                    "set mqtt.ca_file to the CA that signed it")
        except (ssl.SSLError, OSError) as exc:
            return f"TLS handshake with {cfg.host}:{cfg.port} failed: {exc}"


class Topics:
    def __init__(self, prefix: str, device_id: str):
        self.base = f"{prefix}/{device_id}"
        self.availability = f"{self.base}/availability"
        self.status = f"{self.base}/status"
        self.result = f"{self.base}/result"
        self.cmd = f"{self.base}/cmd/"

    def __getitem__(self, name: str) -> str:
        return f"{self.base}/{name}"


class MqttPublisher:
    """Publishes over one paho client running its own network thread.

    Connection is asynchronous: the daemon starts and classifies while the broker is
    unreachable, and paho reconnects with backoff. availability is set `online` on every
    (re)connect and the broker announces `offline` by the last will if we vanish.
    """

    def __init__(self, cfg: MqttConfig, device_id: str,
                 on_command: CommandHandler | None = None):
        import paho.mqtt.client as mqtt  # the device extra; imported where it is used

        self._mqtt = mqtt
        self.cfg = cfg
        self.topics = Topics(cfg.topic_prefix, device_id)
        self.on_command = on_command
        self.connected = threading.Event()
        self.on_connected: list[Callable[[], None]] = []
        self.subscriptions: dict[str, Callable[[bytes], None]] = {}  # exact topic -> handler
        self.on_puback: Callable[[int], None] | None = None
        self.reconnects = 0
        self.errors = 0
        self.last_error = ""
        client_id = cfg.client_id or f"coral-classifier-{device_id}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311)
        paho_log = logging.getLogger("paho")
        paho_log.addFilter(_QuietPaho())
        self.client.enable_logger(paho_log)
        self._reported = ""
        self.client.will_set(self.topics.availability, "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        password = cfg.password()
        if cfg.username:
            self.client.username_pw_set(cfg.username, password)
        elif password:
            raise ConfigError("mqtt: a password is configured but mqtt.username is empty")
        if cfg.tls:
            try:
                self.client.tls_set(ca_certs=cfg.ca_file or None,
                                    certfile=cfg.cert_file or None,
                                    keyfile=cfg.key_file or None,
                                    cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"mqtt TLS files cannot be loaded: {exc}: check mqtt.ca_file, "
                                  "mqtt.cert_file and mqtt.key_file") from None
            self.client.tls_insecure_set(cfg.tls_insecure)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_connect_fail = self._on_connect_fail

    def start(self) -> None:
        self.client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive)
        self.client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    # paho callbacks run on paho's network thread.
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            log.error("MQTT %s:%s %s (check mqtt.username / password and the broker ACL)",
                      self.cfg.host, self.cfg.port, self.last_error)
            return
        log.info("MQTT connected to %s:%s", self.cfg.host, self.cfg.port)
        self.last_error = self._reported = ""
        # Subscriptions are renewed on every connect: a clean session forgets them.
        if self.on_command is not None and self.cfg.commands:
            client.subscribe(self.topics.cmd + "+", qos=1)
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        client.publish(self.topics.availability, "online", qos=1, retain=True)
        self.connected.set()
        self.reconnects += 1
        for hook in self.on_connected:
            hook()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if self.on_puback is not None:
            self.on_puback(mid)

    def _on_connect_fail(self, client, userdata) -> None:
        reason = diagnose_connection(self.cfg) or "connection failed"
        self.last_error = f"MQTT: {reason}"
        if reason != self._reported:  # once per distinct reason, not every retry
            self._reported = reason
            log.error("MQTT %s:%s: %s (retrying)", self.cfg.host, self.cfg.port, reason)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if reason_code != 0:
            log.warning("MQTT disconnected (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        handler = self.subscriptions.get(msg.topic)
        if handler is not None:
            handler(bytes(msg.payload))
            return
        name = msg.topic[len(self.topics.cmd):]
        if not msg.topic.startswith(self.topics.cmd) or "/" in name or self.on_command is None:
            return
        try:
            args = json.loads(msg.payload) if msg.payload.strip() else {}
            if not isinstance(args, dict):
                raise ValueError
        except ValueError:
            reply = {"ok": False, "error": "payload is not a JSON object: send {} or "
                                           "{\"key\": value, ...}"}
        else:
            try:
                reply = self.on_command(name, args)
            except Exception as exc:  # a command must never take the daemon down
                log.exception("command %s failed", name)
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if reply is not None:  # None: the frame loop replies when it is done
            self.reply(name, reply)

    def reply(self, command: str, reply: dict[str, Any]) -> None:
        self.publish(f"{self.topics.cmd}{command}/reply", reply, qos=1)

    def publish(self, topic: str, payload: dict[str, Any] | bytes, *, qos: int = 0,
                retain: bool = False) -> None:
        data = payload if isinstance(payload, bytes) else messages.dumps(payload)
        info = self.client.publish(topic, data, qos=qos, retain=retain)
        if info.rc not in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN):
            self.errors += 1
            self.last_error = f"publish to {topic} failed: {self._mqtt.error_string(info.rc)}"

    def close(self, state: str = "stopped", timeout: float = 3.0) -> None:
        """Announce a clean stop (retained), then disconnect so no last will is sent."""
        if self.connected.is_set():
            info = self.client.publish(self.topics.availability, state, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("could not announce %s: %s", state, exc)
        # Stop the network thread first, then disconnect synchronously: the other order
        # makes paho 2.2's thread log a spurious "Client is not connected" error.
        self.client.loop_stop()
        self.client.disconnect()
