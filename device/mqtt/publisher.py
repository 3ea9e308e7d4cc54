"""The Publisher interface and its MQTT implementation (paho-mqtt 2.x).

Topics under <topic_prefix>/<device_id>/: availability (retained online / last-will
offline / stopped), status (retained JSON), result, event, counts, snapshot, and
cmd/<name> for commands with replies on cmd/<name>/reply. Every paho callback is guarded
(mqtt.client.guarded), commands are queued to their own thread, and each subscription has
its own handler (paho's message_callback_add).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel

from device import messages
from device.config import MqttConfig
from device.mqtt.client import diagnose_connection, guarded, make_client
from device.mqtt.topics import Topics

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Results out, and a way to stop: what the sinks and commands see of MQTT."""

    def publish(self, topic: str, payload: dict[str, Any] | BaseModel | bytes, *,
                qos: int = 0, retain: bool = False) -> None: ...

    def close(self, state: str = "stopped") -> None: ...


class MqttPublisher:
    """Connects in the background and keeps reconnecting; publishes never block."""

    def __init__(self, cfg: MqttConfig, device_id: str, client_id: str = ""):
        self.cfg = cfg
        self.topics = Topics(cfg.topic_prefix, device_id)
        self.connected = threading.Event()
        self.reconnects = 0
        self.errors = 0
        self.callback_errors = 0
        self.last_error = ""
        self.disconnected_since: float | None = time.monotonic()  # not yet connected
        self._reported = ""
        self.on_connected: list[Callable[[], None]] = []
        self.on_puback: Callable[[int], None] | None = None
        self.on_command: Callable[[str, bytes], None] | None = None
        self._subscriptions: dict[str, Callable[[bytes], None]] = {}
        client_id = client_id or cfg.client_id or f"coral-classifier-{device_id}"
        self.client = make_client(cfg, client_id,
                                  will=(self.topics.availability, "offline"), logger=log)
        self._mqtt = __import__("paho.mqtt.client", fromlist=["Client"])
        g = self._guard
        self.client.on_connect = g(self._on_connect)
        self.client.on_disconnect = g(self._on_disconnect)
        self.client.on_message = g(self._on_unmatched)
        self.client.on_publish = g(self._on_publish)
        self.client.on_connect_fail = g(self._on_connect_fail)
        self.client.message_callback_add(self.topics.cmd + "+", g(self._on_command))

    def _guard(self, callback: Callable[..., Any]) -> Callable[..., None]:
        return guarded(callback, self._callback_failed)

    def _callback_failed(self, message: str) -> None:
        self.callback_errors += 1
        self.last_error = f"MQTT callback failed: {message}"

    def subscribe(self, topic: str, handler: Callable[[bytes], None]) -> None:
        """A topic with its own handler (guarded), subscribed on every connect."""
        self._subscriptions[topic] = handler
        self.client.message_callback_add(
            topic, self._guard(lambda client, userdata, msg: handler(bytes(msg.payload))))

    def start(self) -> None:
        self.client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive)
        self.client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    @property
    def network_alive(self) -> bool:
        """paho's network thread is running (it never should die; the watchdog checks)."""
        thread = getattr(self.client, "_thread", None)
        return thread is not None and thread.is_alive()

    def healthy(self, max_disconnected: float) -> bool:
        """The MQTT side works: its thread runs, and it is connected or has been trying
        for less than max_disconnected seconds (the systemd watchdog's condition)."""
        since = self.disconnected_since
        return self.network_alive and (self.connected.is_set() or since is None
                                       or time.monotonic() - since < max_disconnected)

    # paho callbacks run on paho's network thread, each under _guard.
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
        for topic in self._subscriptions:
            try:
                client.subscribe(topic, qos=1)
            except ValueError as exc:  # config validation should have caught it
                self._callback_failed(f"cannot subscribe to {topic!r}: {exc}")
        client.publish(self.topics.availability, "online", qos=1, retain=True)
        self.connected.set()
        self.disconnected_since = None
        self.reconnects += 1
        for hook in self.on_connected:
            try:
                hook()
            except Exception as exc:  # one failing hook must not skip the others
                log.exception("on-connect step %s failed", getattr(hook, "__name__", hook))
                self._callback_failed(f"on connect: {type(exc).__name__}: {exc}")

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
        if self.disconnected_since is None:
            self.disconnected_since = time.monotonic()
        if reason_code != 0:
            log.warning("MQTT disconnected (%s); reconnecting", reason_code)

    def _on_unmatched(self, client, userdata, msg) -> None:
        log.debug("MQTT message on %s with no handler", msg.topic)

    def _on_command(self, client, userdata, msg) -> None:
        if msg.retain:
            # Delivered from the broker's store at subscribe time: a stale command from
            # before this start. Live commands reach subscribers with retain = 0.
            log.warning("ignored a retained command on %s: send commands without retain",
                        msg.topic)
            return
        if self.on_command is not None:
            self.on_command(msg.topic[len(self.topics.cmd):], bytes(msg.payload))

    def reply(self, command: str, reply: dict[str, Any]) -> None:
        self.publish(f"{self.topics.cmd}{command}/reply", reply, qos=1)

    def publish(self, topic: str, payload: dict[str, Any] | BaseModel | bytes, *,
                qos: int = 0, retain: bool = False) -> None:
        data = payload if isinstance(payload, bytes) else messages.dumps(payload)
        info = self.client.publish(topic, data, qos=qos, retain=retain)
        if info.rc not in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN):
            self.errors += 1
            self.last_error = f"publish to {topic} failed: {self._mqtt.error_string(info.rc)}"

    def publish_qos1(self, topic: str, payload: bytes) -> tuple[bool, int]:
        """For the event sender: (accepted by paho, mid) of a QoS-1 publish."""
        info = self.client.publish(topic, payload, qos=1)
        return info.rc == self._mqtt.MQTT_ERR_SUCCESS, info.mid

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
