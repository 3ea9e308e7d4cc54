"""`coral-train fleet` / `make fleet`: every device the broker knows, from the retained
availability and status topics: id, online/offline, model, backend, fps, last event, errors.

A controller's view, run on a workstation like deploy and rollout (the device package has no
business knowing its fleet); it parses the devices' status with their own model
(device.messages.StatusPayload) and subscribes to the topics device.mqtt.topics names."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from device.config import MqttConfig
from device.errors import BrokerError
from device.messages import StatusPayload
from device.mqtt.topics import device_and_kind, fleet_filters
from host_training.fleet.broker import broker_config


class FleetError(BrokerError):
    """The broker cannot be reached or refuses us: exit code 6."""


@dataclass
class Device:
    id: str
    availability: str = "unknown"
    state: str = ""
    model: str = ""
    version: str = ""
    sha256: str = ""
    backend: str = ""
    fps: float = 0.0
    last_event: float = 0.0
    errors: int = 0
    last_error: str = ""
    update: str = ""
    status_ts: float = 0.0
    error_counts: dict[str, int] = field(default_factory=dict)


def collect(cfg: MqttConfig, prefix: str = "coral-classifier", settle: float = 1.0,
            wait: float = 10.0) -> list[Device]:
    """Subscribe to <prefix>/+/availability and /status; return once retained messages stop
    arriving for `settle` seconds (at most `wait`)."""
    from device.mqtt.client import guarded, make_client

    devices: dict[str, Device] = {}
    last = [time.monotonic()]
    lock = threading.Lock()
    subscribed = threading.Event()
    failed: list[str] = []

    def on_connect(client, userdata, flags, rc, props) -> None:
        if rc.is_failure:
            failed.append(str(rc))
            subscribed.set()
            return
        client.subscribe([(f, 1) for f in fleet_filters(prefix)])

    def on_message(client, userdata, msg) -> None:
        device_id, kind = device_and_kind(msg.topic)
        with lock:
            d = devices.setdefault(device_id, Device(device_id))
            last[0] = time.monotonic()
            if kind == "availability":
                d.availability = msg.payload.decode(errors="replace")[:20]
            elif kind == "status":
                try:
                    _apply(d, StatusPayload.model_validate_json(msg.payload))
                except ValidationError as exc:
                    d.last_error = f"status does not fit its schema: {_first_error(exc)}"

    client = make_client(cfg, f"coral-fleet-{time.monotonic_ns() % 10**9}")
    client.on_connect = guarded(on_connect)
    client.on_subscribe = guarded(lambda *a: (last.__setitem__(0, time.monotonic()),
                                              subscribed.set()))
    client.on_message = guarded(on_message)
    try:
        client.connect(cfg.host, cfg.port)
    except OSError as exc:
        raise FleetError(f"cannot reach the broker {cfg.host}:{cfg.port}: {exc}") from None
    client.loop_start()
    try:
        if not subscribed.wait(wait) or failed:
            raise FleetError(f"the broker {cfg.host}:{cfg.port} refused us "
                             f"({failed[0] if failed else 'no answer'}): check mqtt "
                             "credentials (--config) and its ACL")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and time.monotonic() - last[0] < settle:
            time.sleep(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
    with lock:
        return sorted(devices.values(), key=lambda d: d.id)


def _apply(d: Device, s: StatusPayload) -> None:
    d.state = s.state
    d.model, d.version, d.sha256 = s.model.name, s.model.version, s.model.sha256
    d.backend, d.fps, d.last_event = s.backend, s.fps, s.last_event_ts
    d.error_counts = dict(s.errors)
    d.errors = sum(d.error_counts.values())
    d.last_error, d.status_ts = s.last_error, s.ts
    d.update = f"{s.update.state} {s.update.version}".strip() if s.update else ""


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    return f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}"


def _when(ts: float, now: float) -> str:
    if not ts:
        return "-"
    ago = max(0.0, now - ts)
    if ago < 120:
        return f"{ago:.0f}s ago"
    if ago < 7200:
        return f"{ago / 60:.0f}m ago"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def table(devices: list[Device], now: float | None = None) -> str:
    """A plain-text table, one device per line."""
    now = time.time() if now is None else now
    head = ("DEVICE", "AVAIL", "STATE", "MODEL", "VERSION", "SHA256", "BACKEND", "FPS",
            "LAST EVENT", "ERRORS", "LAST ERROR")
    rows = [(d.id, d.availability, d.state or "-", d.model or "-", d.version or "-",
             d.sha256[:12] or "-", d.backend or "-", f"{d.fps:.1f}",
             _when(d.last_event, now), str(d.errors),
             (d.last_error[:60] + ("…" if len(d.last_error) > 60 else "")) or "-")
            for d in devices]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [head, *rows]]
    online = sum(d.availability == "online" for d in devices)
    lines.append(f"{len(devices)} device(s), {online} online")
    return "\n".join(lines)


def run(broker: str, cfg: MqttConfig | None = None, prefix: str = "", as_json: bool = False,
        settle: float = 1.0) -> str:
    """What `coral-train fleet` prints. broker (host:port) overrides the config's."""
    base = broker_config(broker, cfg)
    devices = collect(base, prefix or base.topic_prefix, settle)
    if as_json:
        return json.dumps([asdict(d) for d in devices], indent=2)
    return table(devices) if devices else (
        f"no devices on {base.host}:{base.port} under {prefix or base.topic_prefix}/: is "
        "the topic prefix right, and do the devices use this broker?")
