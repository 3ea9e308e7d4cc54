"""The broker connection of the workstation's controllers (fleet view, deploy, rollout,
watch): the [mqtt] section of a config file (credentials, TLS, prefix) and a --broker
host:port that replaces only the address."""

from __future__ import annotations

from device.config import MqttConfig
from device.errors import ConfigError

CONFIG_HELP = ("take the broker, credentials (mqtt.username, password_file or "
               "password_env), TLS (tls, ca_file, cert_file, key_file) and topic prefix from "
               "the [mqtt] section of this config file (a daemon config, or one with only "
               "[mqtt] for a controller user)")


def load_mqtt(path: str | None) -> MqttConfig | None:
    """--config of fleet, deploy and rollout: the [mqtt] section of that config file."""
    if not path:
        return None
    from device.config import load_config

    return load_config(path).mqtt


def broker_config(broker: str, cfg: MqttConfig | None = None,
                  default_host: str = "localhost") -> MqttConfig:
    """The connection fleet, deploy and rollout use: the config's (credentials, TLS,
    prefix), else anonymous to default_host:1883; `broker` (host:port) replaces the
    address only."""
    base = cfg or MqttConfig(host=default_host)
    if broker:
        host, _, port = broker.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--broker {broker!r} must be host:port")
        base = base.model_copy(update={"host": host.strip("[]"), "port": int(port)})
    return base
