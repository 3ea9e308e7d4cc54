"""Metrics for Prometheus and discovery for Home Assistant, both optional.

Metrics are read from the daemon's own counters when Prometheus scrapes, so the frame loop
pays only for one histogram observation per frame.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from device.daemon.lifecycle import Daemon

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1,
                   0.25, 0.5, 1.0)


class Metrics:
    """A /metrics endpoint on its own registry (no process-global state)."""

    def __init__(self, daemon: Daemon, port: int, address: str):
        from prometheus_client import CollectorRegistry, Histogram, start_http_server

        self.registry = CollectorRegistry()
        self.inference = Histogram("coral_inference_seconds", "Interpreter invoke time",
                                   buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_DaemonCollector(daemon))
        self.server, self.thread = start_http_server(port, address, registry=self.registry)
        log.info("Prometheus metrics on http://%s:%d/metrics", address, port)

    def close(self) -> None:
        self.server.shutdown()


class _DaemonCollector:
    def __init__(self, daemon: Daemon):
        self.d = daemon

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
        )

        d = self.d
        yield CounterMetricFamily("coral_frames", "Frames classified", value=d.frames)
        yield CounterMetricFamily("coral_dropped_frames", "Stale frames dropped under load",
                                  value=d.buffer.dropped if d.buffer else 0)
        yield CounterMetricFamily("coral_results", "Result messages published", value=d.published)
        yield CounterMetricFamily("coral_events", "Events decided", value=d.events)
        yield CounterMetricFamily("coral_reconnects", "Broker reconnections",
                                  value=max(0, d.publisher.reconnects - 1))
        errors = CounterMetricFamily("coral_errors", "Errors by kind", labels=["kind"])
        for kind, n in d.errors.items():
            errors.add_metric([kind], n)
        yield errors
        yield GaugeMetricFamily("coral_fps", "Frames per second, last interval", value=d.fps)
        pending, size = d.outbox.depth()
        yield GaugeMetricFamily("coral_outbox_events", "Events waiting for a PUBACK",
                                value=pending)
        yield GaugeMetricFamily("coral_outbox_bytes", "Bytes waiting in the outbox", value=size)
        info = InfoMetricFamily("coral_model", "The model being served")
        info.add_metric([], {**d.model_info, "backend": d.classifier.backend})
        yield info


def discovery_configs(daemon: Daemon, prefix: str) -> dict[str, dict[str, Any]]:
    """Home Assistant MQTT discovery: topic -> retained config payload."""
    dev_id = daemon.device_id
    base = daemon.topics.base
    node = f"coral_classifier_{''.join(c if c.isalnum() else '_' for c in dev_id)}"
    device = {"identifiers": [node], "name": f"coral-classifier {dev_id}",
              "manufacturer": "coral-classifier", "model": daemon.model_info["name"],
              "sw_version": daemon.status().software}
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
    background = set(daemon.cfg.decision.background_labels)
    for label in daemon.classifier.bundle.labels:
        if label in background:
            continue
        slug = "".join(c if c.isalnum() else "_" for c in label)
        configs[f"{prefix}/sensor/{node}/count_{slug}/config"] = {
            **common, "name": f"Count {label}", "unique_id": f"{node}_count_{slug}",
            "state_topic": f"{base}/counts",
            "value_template": f"{{{{ value_json.counts.get('{label}', 0) }}}}",
            "state_class": "total_increasing", "icon": "mdi:counter"}
    return configs


def publish_discovery(daemon: Daemon, prefix: str) -> None:
    for topic, config in discovery_configs(daemon, prefix).items():
        daemon.publisher.publish(topic, config, qos=1, retain=True)
    log.info("Home Assistant discovery published under %s/", prefix)
