"""Home Assistant MQTT discovery, built from a status snapshot (nothing else of the daemon).

Retained config payloads under <discovery_prefix>/<component>/<node>/<object>/config, each
with the device's availability topic, re-announced when Home Assistant restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from device.messages import StatusPayload
from device.mqtt.publisher import Publisher

log = logging.getLogger(__name__)


def discovery_configs(status: StatusPayload, base: str, labels: Sequence[str],
                      background: set[str], prefix: str) -> dict[str, dict[str, Any]]:
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


def publish_discovery(publisher: Publisher, status: StatusPayload, base: str,
                      labels: Sequence[str], background: set[str], prefix: str) -> None:
    for topic, config in discovery_configs(status, base, labels, background, prefix).items():
        publisher.publish(topic, config, qos=1, retain=True)
    log.info("Home Assistant discovery published under %s/", prefix)
