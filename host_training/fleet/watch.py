"""Watch one device over MQTT: its retained status and its command replies, to confirm a
reload or an update by the nonce it echoes (never by comparing clocks or last_error)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from pydantic import ValidationError

from device.errors import CoralError
from device.messages import ReplyPayload, StatusPayload
from device.mqtt.topics import Topics

log = logging.getLogger("host_training.fleet.deploy")


class WatchError(CoralError):
    exit_code = 6


def split_broker(broker: str, default_host: str) -> tuple[str, int]:
    host, _, port = (broker or f"{default_host}:1883").rpartition(":")
    if not host or not port.isdigit():
        raise WatchError(f"broker {broker!r} must be host:port")
    return host, int(port)


class DeviceWatch:
    """Follows <prefix>/<device_id>/status and cmd/<name>/reply (paho, via make_client)."""

    def __init__(self, broker: str, device_id: str, prefix: str = "",
                 default_host: str = "localhost", commands: tuple[str, ...] = ("reload",),
                 mqtt=None):
        """mqtt: the MqttConfig of --config (credentials, TLS, prefix), as `fleet` takes it;
        broker (host:port) replaces its address; prefix '' = the config's."""
        from device.errors import ConfigError
        from device.mqtt.client import guarded, make_client
        from host_training.fleet.broker import broker_config

        try:
            cfg = broker_config(broker, mqtt, default_host)
        except ConfigError as exc:
            raise WatchError(str(exc)) from None
        host, port = cfg.host, cfg.port
        self.topics = Topics(prefix or cfg.topic_prefix, device_id)
        self.base = self.topics.base
        self.device_id = device_id
        self.status: dict[str, Any] = {}
        self.replies: list[tuple[str, dict[str, Any]]] = []
        self.changed = threading.Condition()
        self.subscribed = threading.Event()
        self.client = make_client(cfg, f"coral-deploy-{device_id}-{os.getpid()}")
        topics = [(self.topics.status, 1)] + [(self.topics.reply(c), 1) for c in commands]
        refused: list[str] = []

        def on_connect(client, userdata, flags, rc, props) -> None:
            if rc.is_failure:
                refused.append(str(rc))
                self.subscribed.set()
            else:
                client.subscribe(topics)

        def on_subscribe(client, userdata, mid, codes, props) -> None:
            if any(c.is_failure for c in codes):
                refused.append(f"subscription refused ({', '.join(map(str, codes))})")
            self.subscribed.set()

        self.client.on_connect = guarded(on_connect)
        self.client.on_subscribe = guarded(on_subscribe)
        self.client.on_message = guarded(self._on_message)
        try:
            self.client.connect(host, port)
        except OSError as exc:
            raise WatchError(f"cannot reach the broker {host}:{port} to watch {device_id} "
                             f"({exc}): give BROKER=host:port") from None
        self.client.loop_start()
        if not self.subscribed.wait(10) or refused:
            self.close()
            raise WatchError(f"the broker {host}:{port} did not accept a subscription to "
                             f"{self.base}/status within 10 s"
                             + (f": {refused[0]}" if refused else "")
                             + ": give --config with the controller's credentials and TLS "
                             "(CONFIG=... for make), and check the broker's ACL")

    def _on_message(self, client, userdata, msg) -> None:
        """Status and replies parsed with the device's own payload models (kept as dicts
        for the waiters); what does not fit them is ignored."""
        try:
            if msg.topic == self.topics.status:
                parsed = StatusPayload.model_validate_json(msg.payload)
            else:
                parsed = ReplyPayload.model_validate_json(msg.payload)
        except ValidationError:
            return
        data = parsed.model_dump(mode="json")
        with self.changed:
            if msg.topic == self.topics.status:
                self.status = data
            else:
                self.replies.append((self.topics.command_of_reply(msg.topic), data))
            self.changed.notify_all()

    def command(self, name: str, payload: dict[str, Any]) -> None:
        info = self.client.publish(self.topics.command(name), json.dumps(payload), qos=1)
        info.wait_for_publish(10)

    def wait(self, predicate, timeout: float):
        """Wait until predicate(status, replies) returns something truthy; return it, or
        None on timeout."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                got = predicate(self.status, self.replies)
                if got:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(min(left, 0.5))

    def wait_reload(self, nonce: str, sha256: str, timeout: float) -> tuple[bool, str]:
        """(True, "") once the retained status echoes nonce while serving sha256; (False,
        why) when the device answers this nonce with a failure, or on timeout."""
        def outcome(status, replies):
            if status.get("reload_nonce") == nonce:
                served = status.get("model", {}).get("sha256", "")
                if served == sha256:
                    return (True, "")
                return (False, f"the device reloaded but serves {served[:12]}…, not "
                               f"{sha256[:12]}…")
            for name, r in replies:
                if name == "reload" and r.get("nonce") == nonce and not r.get("ok"):
                    return (False, f"reload failed on the device: {r.get('error', '?')}")
            return None

        got = self.wait(outcome, timeout)
        if got is None:
            served = self.status.get("model", {}).get("sha256", "?")[:12]
            return False, (f"the device did not report the new model within {timeout:.0f} s "
                           f"(it serves {served}…)")
        return got

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
