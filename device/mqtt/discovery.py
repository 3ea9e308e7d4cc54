"""Home Assistant MQTT discovery, built from a status snapshot (nothing else of the daemon).

Retained config payloads under <discovery_prefix>/<component>/<node>/<object>/config, each
with the device's availability topic and an `origin`, re-announced when Home Assistant
restarts: sensors (last result, fps, counts of each note, of unknown and refused notes,
last error), a "problem" binary_sensor, per region a state sensor and an "object present"
binary_sensor, an event entity for decisions, an image entity for snapshots, a "Paused"
switch and buttons for reset counts / take snapshot. Every key is one Home Assistant's
MQTT integration accepts for its platform (tests/test_homeassistant.py checks them against
schemas transcribed from its documentation). What was announced is remembered on disk, so a
region removed from the config has its entities removed (an empty retained config).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.decision import REFUSED_PREFIX
from device.messages import StatusPayload
from device.mqtt.publisher import Publisher
from device.mqtt.topics import state_topic

log = logging.getLogger(__name__)

SUPPORT_URL = "https://github.com/coral-classifier/coral-classifier#readme"
UNKNOWN, REFUSED = "unknown", "refused"
# An event's verdict (accepted | refused | unknown); events from before verdicts existed
# were all accepted ones or labelled "unknown".
VERDICT = "{% set v = value_json.verdict | default('accepted') %}"


@dataclass(frozen=True)
class Labels:
    """The bundle's labels and its operating point's roles for them."""

    labels: Sequence[str]
    background: frozenset[str] = frozenset()
    refused: frozenset[str] = frozenset()
    unknown: frozenset[str] = frozenset()

    @property
    def accepted(self) -> list[str]:
        """The notes an event can accept (each gets a counter and an event type)."""
        never = self.background | self.refused | self.unknown | {UNKNOWN, REFUSED}
        return [lb for lb in self.labels if lb not in never]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def discovery_configs(status: StatusPayload, base: str, labels: Labels, prefix: str,
                      rois: Sequence[str] = (), mode: str = "event",
                      web_url: str = "") -> dict[str, dict[str, Any]]:
    """Home Assistant MQTT discovery: topic -> retained config payload.

    Args:
        status: the daemon's status (device id, model, software version).
        base: the device's topic base, `<topic_prefix>/<device_id>`.
        labels: the bundle's labels with their roles (background, refused, unknown).
        prefix: Home Assistant's discovery prefix.
        rois: the configured regions ([] = the whole scene).
        mode: decision.mode: "event" publishes events, "stream" a result per frame.
        web_url: the device's web page (the device's `configuration_url`), "" = none.
    """
    node = f"coral_classifier_{_slug(status.device_id)}"
    common = _common(status, base, node, web_url)
    configs: dict[str, dict[str, Any]] = {}

    def add(component: str, obj: str, name: str, **keys: Any) -> None:
        configs[f"{prefix}/{component}/{node}/{obj}/config"] = {
            **common, "name": name, "unique_id": f"{node}_{obj}", **keys}

    # the order is the order they are published in
    _readings(add, base, mode)
    _counters(add, base, labels)
    _health(add, base)
    _regions(add, base, rois)
    _outputs(add, base, labels)
    _controls(add, base)
    return configs


def _common(status: StatusPayload, base: str, node: str, web_url: str) -> dict[str, Any]:
    """The keys every entity shares: its device, the origin and the availability topic."""
    device = {"identifiers": [node], "name": f"coral-classifier {status.device_id}",
              "manufacturer": "coral-classifier", "model": status.model.name,
              "sw_version": status.software}
    if web_url:
        device["configuration_url"] = web_url
    return {"device": device, "origin": {"name": "coral-classifier",
                                         "sw_version": status.software,
                                         "support_url": SUPPORT_URL},
            "availability": [{"topic": f"{base}/availability",
                              "value_template": "{{ 'online' if value == 'online' "
                                                "else 'offline' }}"}]}


def _readings(add, base: str, mode: str) -> None:
    """The last result (from events or from per-frame results) and the frame rate."""
    # event mode never publishes `result`, stream mode never an `event`
    if mode == "event":
        add("sensor", "last_result", "Last result", state_topic=f"{base}/event",
            value_template=VERDICT + "{{ value_json.label if v == 'accepted' else v }}",
            json_attributes_topic=f"{base}/event", icon="mdi:cash")
    else:
        add("sensor", "last_result", "Last result", state_topic=f"{base}/result",
            value_template="{{ value_json.label }}", json_attributes_topic=f"{base}/result",
            icon="mdi:cash")
    add("sensor", "fps", "Frames per second", state_topic=f"{base}/status",
        value_template="{{ value_json.fps }}", unit_of_measurement="fps",
        state_class="measurement", entity_category="diagnostic", icon="mdi:speedometer")


def _counters(add, base: str, labels: Labels) -> None:
    """A counter per accepted note, one for unknown and one for refused notes."""
    def count(key: str) -> str:
        return f"value_json.counts.get({key!r}, 0)"

    for label in labels.accepted:
        add("sensor", f"count_{_slug(label)}", f"Count {label}", state_topic=f"{base}/counts",
            value_template=f"{{{{ {count(label)} }}}}", state_class="total_increasing",
            icon="mdi:counter")
    add("sensor", "count_unknown", "Unknown notes", state_topic=f"{base}/counts",
        value_template=f"{{{{ {count(UNKNOWN)} }}}}", state_class="total_increasing",
        icon="mdi:help-circle-outline")
    # refused events count per class as "refused:<class>" (device.decision.Event.count_key)
    refused = ("{% set ns = namespace(n=0) %}{% for k, v in value_json.counts.items() %}"
               "{% if k.startswith('" + REFUSED_PREFIX + "') %}{% set ns.n = ns.n + v %}"
               "{% endif %}{% endfor %}{{ ns.n }}")
    add("sensor", "count_refused", "Refused notes", state_topic=f"{base}/counts",
        value_template=refused, state_class="total_increasing", icon="mdi:cash-remove")


def _health(add, base: str) -> None:
    """A problem binary_sensor and the last error, from the retained status."""
    status = f"{base}/status"
    add("binary_sensor", "problem", "Problem", state_topic=status, device_class="problem",
        entity_category="diagnostic",
        value_template="{{ 'ON' if value_json.last_error else 'OFF' }}",
        json_attributes_topic=status,
        json_attributes_template="{{ {'last_error': value_json.last_error, 'errors': "
                                 "value_json.errors} | to_json }}")
    add("sensor", "last_error", "Last error", state_topic=status,
        entity_category="diagnostic", icon="mdi:alert-circle-outline",
        value_template="{{ (value_json.last_error or 'none')[:250] }}")


def _regions(add, base: str, rois: Sequence[str]) -> None:
    """Per region (or the whole scene) its state and whether an object is present."""
    for roi in rois or [""]:
        obj = f"roi_{roi}" if roi else "scene"
        topic = state_topic(base, roi)
        what = f" {roi}" if roi else ""
        add("sensor", f"{obj}_state", f"State{what}", state_topic=topic,
            value_template="{{ value_json.state }}", json_attributes_topic=topic,
            icon="mdi:eye")
        add("binary_sensor", f"{obj}_present", f"Object present{what}", state_topic=topic,
            device_class="occupancy",
            value_template="{{ 'ON' if value_json.present else 'OFF' }}")


def _outputs(add, base: str, labels: Labels) -> None:
    """The decision event entity (one type per accepted note, refused, unknown) and the
    snapshot image."""
    types = [*labels.accepted, REFUSED, UNKNOWN]
    add("event", "decision", "Decision", state_topic=f"{base}/event", event_types=types,
        icon="mdi:cash-check",
        value_template=VERDICT + "{{ {'event_type': value_json.label if v == 'accepted' "
        "else v, 'verdict': v, 'label': value_json.label, 'reason': value_json.reason | "
        "default(''), 'roi': value_json.roi, 'score': value_json.score, "
        "'seq': value_json.seq} | to_json }}")
    add("image", "snapshot", "Snapshot", image_topic=f"{base}/snapshot",
        content_type="image/jpeg")


def _controls(add, base: str) -> None:
    """What Home Assistant can do: pause, reset the counts, take a snapshot."""
    # one switch with the state instead of two stateless buttons; cmd/pause and cmd/resume
    # still work for everything else
    add("switch", "paused", "Paused", command_topic=f"{base}/cmd/paused",
        payload_on='{"paused": true}', payload_off='{"paused": false}',
        state_topic=f"{base}/status", state_on="ON", state_off="OFF",
        value_template="{{ 'ON' if value_json.state == 'paused' else 'OFF' }}",
        icon="mdi:pause-circle")
    add("button", "reset_counts", "Reset counts", command_topic=f"{base}/cmd/reset_counts",
        payload_press="{}", entity_category="config", icon="mdi:counter")
    add("button", "take_snapshot", "Take snapshot", command_topic=f"{base}/cmd/snapshot",
        payload_press="{}", entity_category="diagnostic", icon="mdi:camera")


def publish_discovery(publisher: Publisher, status: StatusPayload, base: str,
                      labels: Labels, prefix: str, rois: Sequence[str] = (),
                      memory: Path | None = None, mode: str = "event",
                      web_url: str = "") -> None:
    """Announce every entity; remove (empty retained config) what was announced before and
    is gone now, e.g. a region taken out of the config. `memory` keeps that list."""
    configs = discovery_configs(status, base, labels, prefix, rois, mode, web_url)
    for topic, config in configs.items():
        publisher.publish(topic, config, qos=1, retain=True)
    if memory is not None:
        try:
            before = set(json.loads(memory.read_text()))
        except (OSError, ValueError, TypeError):
            before = set()
        for topic in sorted(before - set(configs)):
            publisher.publish(topic, b"", qos=1, retain=True)
            log.info("Home Assistant entity removed: %s", topic)
        try:
            memory.write_text(json.dumps(sorted(configs)))
        except OSError as exc:
            log.warning("cannot remember the announced entities in %s: %s", memory, exc)
    log.info("Home Assistant discovery published under %s/", prefix)
