"""Home Assistant MQTT discovery, built from a status snapshot (nothing else of the daemon).

Retained config payloads under <discovery_prefix>/<component>/<node>/<object>/config, each
with the device's availability topic, re-announced when Home Assistant restarts: sensors
(last result, last event, fps, counts), per region a state sensor and an "object present"
binary_sensor, an event entity for decisions, an image entity for snapshots and buttons
for pause / resume / reset counts / snapshot. What was announced is remembered on disk, so
a region removed from the config has its entities removed (an empty retained config).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from device.messages import StatusPayload
from device.mqtt.publisher import Publisher, state_topic

log = logging.getLogger(__name__)


def discovery_configs(status: StatusPayload, base: str, labels: Sequence[str],
                      background: set[str], prefix: str,
                      rois: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Home Assistant MQTT discovery: topic -> retained config payload."""
    dev_id = status.device_id
    node = f"coral_classifier_{''.join(c if c.isalnum() else '_' for c in dev_id)}"
    device = {"identifiers": [node], "name": f"coral-classifier {dev_id}",
              "manufacturer": "coral-classifier", "model": status.model.name,
              "sw_version": status.software}
    availability = [{"topic": f"{base}/availability",
                     "value_template": "{{ 'online' if value == 'online' else 'offline' }}"}]
    common = {"device": device, "availability": availability}
    configs = {
        f"{prefix}/sensor/{node}/last_result/config": {
            **common, "name": "Last result", "unique_id": f"{node}_last_result",
            "state_topic": f"{base}/result", "value_template": "{{ value_json.label }}",
            "json_attributes_topic": f"{base}/result", "icon": "mdi:cash"},
        f"{prefix}/sensor/{node}/last_event/config": {
            **common, "name": "Last event", "unique_id": f"{node}_last_event",
            "state_topic": f"{base}/event", "value_template": "{{ value_json.label }}",
            "json_attributes_topic": f"{base}/event", "icon": "mdi:cash-check"},
        f"{prefix}/sensor/{node}/fps/config": {
            **common, "name": "Frames per second", "unique_id": f"{node}_fps",
            "state_topic": f"{base}/status", "value_template": "{{ value_json.fps }}",
            "unit_of_measurement": "fps", "entity_category": "diagnostic"},
    }
    configs.update(_decisions(common, node, base, prefix, labels, background, rois))
    for label in labels:
        if label in background:
            continue
        slug = "".join(c if c.isalnum() else "_" for c in label)
        configs[f"{prefix}/sensor/{node}/count_{slug}/config"] = {
            **common, "name": f"Count {label}", "unique_id": f"{node}_count_{slug}",
            "state_topic": f"{base}/counts",
            "value_template": f"{{{{ value_json.counts.get('{label}', 0) }}}}",
            "state_class": "total_increasing", "icon": "mdi:counter"}
    return configs


def _decisions(common: dict, node: str, base: str, prefix: str, labels: Sequence[str],
               background: set[str], rois: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-region state and presence, the decision event, the snapshot image, buttons."""
    out: dict[str, dict[str, Any]] = {}
    for roi in rois or [""]:
        obj = f"roi_{roi}" if roi else "scene"
        topic = state_topic(base, roi)
        what = f" {roi}" if roi else ""
        out[f"{prefix}/sensor/{node}/{obj}_state/config"] = {
            **common, "name": f"State{what}", "unique_id": f"{node}_{obj}_state",
            "state_topic": topic, "value_template": "{{ value_json.state }}",
            "json_attributes_topic": topic, "icon": "mdi:eye"}
        out[f"{prefix}/binary_sensor/{node}/{obj}_present/config"] = {
            **common, "name": f"Object present{what}", "unique_id": f"{node}_{obj}_present",
            "state_topic": topic, "device_class": "occupancy",
            "value_template": "{{ 'ON' if value_json.present else 'OFF' }}"}
    types = sorted({*(lb for lb in labels if lb not in background), "unknown"})
    out[f"{prefix}/event/{node}/decision/config"] = {
        **common, "name": "Decision", "unique_id": f"{node}_decision",
        "state_topic": f"{base}/event", "event_types": types,
        "value_template": "{{ {'event_type': value_json.label, 'roi': value_json.roi, "
                          "'score': value_json.score, 'seq': value_json.seq} | to_json }}"}
    out[f"{prefix}/image/{node}/snapshot/config"] = {
        **common, "name": "Snapshot", "unique_id": f"{node}_snapshot",
        "image_topic": f"{base}/snapshot", "content_type": "image/jpeg"}
    for command, icon in (("pause", "mdi:pause"), ("resume", "mdi:play"),
                          ("reset_counts", "mdi:counter"), ("snapshot", "mdi:camera")):
        out[f"{prefix}/button/{node}/{command}/config"] = {
            **common, "name": command.replace("_", " ").capitalize(),
            "unique_id": f"{node}_{command}", "command_topic": f"{base}/cmd/{command}",
            "payload_press": "{}", "icon": icon}
    return out


def publish_discovery(publisher: Publisher, status: StatusPayload, base: str,
                      labels: Sequence[str], background: set[str], prefix: str,
                      rois: Sequence[str] = (), memory: Path | None = None) -> None:
    """Announce every entity; remove (empty retained config) what was announced before and
    is gone now, e.g. a region taken out of the config. `memory` keeps that list."""
    configs = discovery_configs(status, base, labels, background, prefix, rois)
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
