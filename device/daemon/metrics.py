"""Metrics for Prometheus, optional.

Metrics are read from a status snapshot when Prometheus scrapes, so the frame loop pays
only for one histogram observation per frame and nothing here reaches into the daemon.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from device.messages import StatusPayload

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1,
                   0.25, 0.5, 1.0)


class Metrics:
    """A /metrics endpoint on its own registry (no process-global state)."""

    def __init__(self, snapshot: Callable[[], StatusPayload], port: int, address: str):
        from prometheus_client import CollectorRegistry, Histogram, start_http_server

        self.registry = CollectorRegistry()
        self.inference = Histogram("coral_inference_seconds", "Interpreter invoke time",
                                   buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_StatusCollector(snapshot))
        self.server, self.thread = start_http_server(port, address, registry=self.registry)
        log.info("Prometheus metrics on http://%s:%d/metrics", address, port)

    def close(self) -> None:
        self.server.shutdown()


class _StatusCollector:
    def __init__(self, snapshot: Callable[[], StatusPayload]):
        self.snapshot = snapshot

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
        )

        s = self.snapshot()
        yield CounterMetricFamily("coral_frames", "Frames classified", value=s.frames)
        yield CounterMetricFamily("coral_dropped_frames", "Frames dropped under load or in "
                                  "flight at a worker restart", value=s.dropped_frames)
        yield CounterMetricFamily("coral_results", "Result messages published",
                                  value=s.results_published)
        yield CounterMetricFamily("coral_events", "Events decided", value=s.events)
        yield CounterMetricFamily("coral_reconnects", "Broker reconnections", value=s.reconnects)
        yield CounterMetricFamily("coral_worker_restarts", "Inference worker restarts",
                                  value=s.worker_restarts)
        errors = CounterMetricFamily("coral_errors", "Errors by kind", labels=["kind"])
        for kind, n in s.errors.items():
            errors.add_metric([kind], n)
        yield errors
        yield GaugeMetricFamily("coral_fps", "Frames per second, last interval", value=s.fps)
        yield GaugeMetricFamily("coral_outbox_events", "Events waiting for a PUBACK",
                                value=s.outbox.pending)
        yield GaugeMetricFamily("coral_outbox_bytes", "Bytes waiting in the outbox",
                                value=s.outbox.bytes)
        yield GaugeMetricFamily("coral_outbox_unstored", "Decided events held in memory "
                                "because the outbox cannot be written", value=s.outbox.unstored)
        info = InfoMetricFamily("coral_model", "The model being served")
        info.add_metric([], {**s.model.model_dump(), "backend": s.backend})
        yield info
