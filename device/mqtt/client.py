"""One paho client factory (auth, TLS, logging, last will) for the daemon, doctor, deploy
and the demo, plus the guard every paho callback runs under.

paho-mqtt 2.x runs callbacks on its network thread and an exception escaping one kills
that thread silently: the process stays up, MQTT is dead, and nothing restarts it. So no
callback is handed to paho unguarded.
"""

from __future__ import annotations

import functools
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from device.config import MqttConfig
from device.errors import ConfigError

log = logging.getLogger(__name__)


class _QuietPaho(logging.Filter):
    """paho 2.2's network thread logs "Client is not connected" as an ERROR whenever it
    loops without a socket (while reconnecting, at shutdown): noise, not a fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


def guarded(callback: Callable[..., Any], on_error: Callable[[str], None] | None = None):
    """Wrap a paho callback so that nothing escapes it (not even RecursionError)."""

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            callback(*args, **kwargs)
        except Exception as exc:
            log.exception("MQTT callback %s failed (MQTT keeps running)", callback.__name__)
            if on_error is not None:
                try:
                    on_error(f"{callback.__name__}: {type(exc).__name__}: {exc}")
                except Exception:  # the error reporter itself must not kill paho either
                    log.exception("reporting a callback error failed")

    return wrapper


def make_client(cfg: MqttConfig, client_id: str, *, will: tuple[str, str] | None = None,
                logger: logging.Logger | None = None):
    """A paho 2.x client set up from the config: auth, TLS, reconnect delays, last will.

    Raises ConfigError naming the key when credentials or TLS files are unusable.
    """
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    paho_log = logger or logging.getLogger("paho")
    paho_log.addFilter(_QuietPaho())
    client.enable_logger(paho_log)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    password = cfg.password()
    if cfg.username:
        client.username_pw_set(cfg.username, password)
    elif password:
        raise ConfigError("mqtt: a password is configured but mqtt.username is empty")
    if cfg.tls:
        try:
            client.tls_set(ca_certs=cfg.ca_file or None, certfile=cfg.cert_file or None,
                           keyfile=cfg.key_file or None, cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"mqtt TLS files cannot be loaded: {exc}: check mqtt.ca_file, "
                              "mqtt.cert_file and mqtt.key_file") from None
        client.tls_insecure_set(cfg.tls_insecure)
    return client


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
            if exc.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_
                return (f"TLS: the broker's certificate does not name {cfg.host!r} "
                        f"({exc.verify_message}): connect with the host name in the "
                        "certificate (mqtt.host), or reissue the certificate for this name")
            return (f"TLS: the broker's certificate is not trusted ({exc.verify_message}): "
                    "set mqtt.ca_file to the CA that signed it")
        except (ssl.SSLError, OSError) as exc:
            return f"TLS handshake with {cfg.host}:{cfg.port} failed: {exc}"
