"""The broker connection and what is published."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from device.config.base import Section as _Section
from device.config.base import check_topic as _check_topic
from device.errors import ConfigError


class MqttConfig(_Section):
    """The broker connection and what is published."""

    host: str = Field("localhost", min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    client_id: str = Field("", description="MQTT client id ('' = coral-classifier-<device_id>-"
                           "<random suffix kept in the state folder>: unique per install).")
    keepalive: int = Field(30, ge=5, le=3600, description="Keepalive in seconds.")
    qos: Literal[0, 1, 2] = Field(0, description="QoS of result messages.")
    topic_prefix: str = Field(
        "coral-classifier", min_length=1, description="Topics live under <prefix>/<device_id>/."
    )
    device_id: str = Field("", description="This device's id in topics ('' = the host name).")
    username: str = Field("", description="Username ('' = anonymous).")
    password_file: str = Field("", description="File holding the password (first line).")
    password_env: str = Field(
        "", description="Environment variable holding the password (used if set)."
    )
    tls: bool = Field(False, description="Connect with TLS.")
    ca_file: str = Field("", description="CA certificate to verify the broker ('' = system CAs).")
    cert_file: str = Field("", description="Client certificate for mutual TLS.")
    key_file: str = Field("", description="Client private key for mutual TLS.")
    tls_insecure: bool = Field(
        False, description="Skip verifying the broker's host name. Only for testing."
    )
    status_interval: float = Field(
        10.0, gt=0, le=3600, description="Seconds between retained status refreshes."
    )
    result_max_rate: float = Field(
        0.0, ge=0, description="Max result messages per second (0 = one per frame)."
    )
    commands: bool = Field(True, description="Accept commands on cmd/ (false: ignore them).")

    max_disconnected: float = Field(
        600.0, gt=0, description="Seconds the broker may be unreachable before the systemd "
        "watchdog is no longer fed (a restart then rebuilds the network side).")

    @model_validator(mode="after")
    def _checks(self) -> MqttConfig:
        _check_topic("mqtt.topic_prefix", self.topic_prefix, levels=True)
        if self.device_id:
            _check_topic("mqtt.device_id", self.device_id, levels=False)
        if self.client_id and not re.match(r"^[\x21-\x7e]{1,128}$", self.client_id):
            raise ValueError("mqtt.client_id must be 1-128 printable ASCII characters")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("mqtt.cert_file and mqtt.key_file go together: set both or neither")
        return self

    def resolved_device_id(self) -> str:
        """The configured id, else the host name made topic-safe."""
        if self.device_id:
            return self.device_id
        host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64]
        return host or "coral-classifier"

    def password(self) -> str | None:
        """The password from the environment or a file; None when neither is set."""
        if self.password_env and os.environ.get(self.password_env):
            return os.environ[self.password_env]
        if self.password_file:
            try:
                return Path(self.password_file).read_text().splitlines()[0].strip()
            except (OSError, IndexError) as exc:
                raise ConfigError(
                    f"mqtt.password_file {self.password_file!r} cannot be read ({exc}): "
                    "put the password on its first line and make it readable by the daemon"
                ) from exc
        return None
