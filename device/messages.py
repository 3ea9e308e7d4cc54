"""What goes out: frozen result/status records and their JSON payloads.

The payload shapes are the public contract with machine controllers; each has a JSON
Schema in device/schemas/ that the tests validate every published message against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.bundle import Bundle
from device.decision import Event
from device.inference import Classification

SCHEMA_DIR = Path(__file__).parent / "schemas"


@dataclass(frozen=True)
class Result:
    """One classified frame, with where its time went."""

    seq: int
    ts: float
    classification: Classification
    capture_ms: float
    total_ms: float
    prepare_ms: float = 0.0  # the resize done in the capture thread


@dataclass(frozen=True)
class Status:
    state: str
    device_id: str
    software: str
    model: dict[str, Any]
    backend: str
    runtime: str
    camera: str
    fps: float
    uptime_s: float
    frames: int
    results_published: int
    dropped_frames: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    events: int = 0
    reconnects: int = 0
    outbox: dict[str, Any] = field(default_factory=dict)


def model_info(bundle: Bundle) -> dict[str, str]:
    return {"name": bundle.name, "version": bundle.version, "sha256": bundle.sha256}


def result_payload(result: Result, model: dict[str, str], backend: str) -> dict[str, Any]:
    c = result.classification
    best = c.best
    return {
        "ts": round(result.ts, 3),
        "seq": result.seq,
        "label": best.label if best else None,
        "score": round(best.score, 5) if best else 0.0,
        "top_k": [{"id": k.id, "label": k.label, "score": round(k.score, 5)} for k in c.top_k],
        "model": model,
        "backend": backend,
        "latency_ms": {
            "capture": round(result.capture_ms, 3),
            "preprocess": round(result.prepare_ms + c.preprocess_ms, 3),
            "inference": round(c.inference_ms, 3),
            "postprocess": round(c.postprocess_ms, 3),
            "total": round(result.total_ms, 3),
        },
    }


def status_payload(status: Status, ts: float) -> dict[str, Any]:
    return {
        "ts": round(ts, 3),
        "state": status.state,
        "device_id": status.device_id,
        "software": status.software,
        "model": status.model,
        "backend": status.backend,
        "runtime": status.runtime,
        "camera": status.camera,
        "fps": round(status.fps, 2),
        "uptime_s": round(status.uptime_s, 1),
        "frames": status.frames,
        "results_published": status.results_published,
        "dropped_frames": status.dropped_frames,
        "errors": dict(status.errors),
        "last_error": status.last_error,
        "events": status.events,
        "reconnects": status.reconnects,
        "outbox": dict(status.outbox),
    }


def event_payload(event: Event, model: dict[str, str], device_id: str,
                  seq: int) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "seq": seq,
        "device_id": device_id,
        "label": event.label,
        "score": round(event.score, 5),
        "frames": event.frames,
        "first_ts": round(event.first_ts, 3),
        "last_ts": round(event.last_ts, 3),
        "model": model,
    }


def dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of a topic's payload ('result', 'status', ...)."""
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
