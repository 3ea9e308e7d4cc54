"""What goes out over MQTT: one pydantic model per payload, the public contract.

The models are the single definition of each payload: the daemon builds its messages from
them, and `python -m device.messages` writes the JSON Schemas in device/schemas/ from them
(a test fails when the committed schemas are stale), which controllers and the tests use.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from device.decision import Event
from device.inference import Classification

SCHEMA_DIR = Path(__file__).parent / "schemas"
SCHEMA_URL = "https://json-schema.org/draft/2020-12/schema"
AVAILABILITY = ("online", "offline", "stopped")


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelInfo(_Payload):
    name: str
    version: str
    sha256: str = Field(pattern="^[0-9a-f]{64}$")


class Ranked(_Payload):
    id: int = Field(ge=0)
    label: str
    score: float


class Latency(_Payload):
    capture: float
    preprocess: float
    inference: float
    postprocess: float
    total: float


class ResultPayload(_Payload):
    """result: one classified frame (decision.mode = "stream")."""

    ts: float
    seq: int = Field(ge=0)
    label: str | None
    score: float
    top_k: list[Ranked]
    model: ModelInfo
    backend: Literal["cpu", "edgetpu"]
    latency_ms: Latency
    accepted: bool | None = Field(None, description="whether this frame counts as a vote "
                                  "for `label` under the bundle's operating point and reject "
                                  "rules (background and unknown are never accepted)")
    ood_score: float | None = Field(None, description="the bundle's out-of-distribution "
                                    "score (higher = less like the training data)")
    reason: str | None = Field(None, description="why: accepted, background, unknown, "
                               "below_threshold, margin, out_of_distribution, refused or "
                               "not_in_accept_list")
    verdict: Literal["accepted", "refused", "unknown", "empty"] | None = Field(
        None, description="the reason in one word: accepted; refused (a known note this "
        "machine hands back); empty (nothing in the slot); unknown (not recognised)")
    explanation: str | None = Field(None, description="the reason in plain language, for "
                                    "a person (a display beside the slot)")
    roi: str | None = Field(None, description="the region of interest this result is for "
                            "(absent or null without [[camera.roi]])")


class OutboxStatus(_Payload):
    pending: int = Field(ge=0, description="events stored, not yet acknowledged by the broker")
    bytes: int = Field(ge=0)
    fill: float = Field(ge=0, description="fraction of the outbox bound in use")
    dropped: int = Field(ge=0, description="oldest unsent events dropped because the outbox "
                         "was full (counts keep them); survives restarts")
    unstored: int = Field(0, ge=0, description="decided events held in memory because the "
                          "outbox cannot be written (disk full, read-only): retried")
    lost: int = Field(0, ge=0, description="decided events lost because the disk failed and "
                      "the spill file (state.spill_bytes) was full; survives restarts")
    lost_seq: list[int] | None = Field(None, description="[first, last] event seq of the "
                                       "latest loss: the gap consumers see in seq")
    warning: str = Field(description="set from 80% full, on a write failure, or after a "
                         "corrupt outbox was set aside")


class UpdateStatus(_Payload):
    """The pull update in progress or last finished (cmd/update)."""

    state: Literal["idle", "waiting_for_lock", "downloading", "verifying", "switching",
                   "self_testing", "done", "failed", "rolled_back"]
    version: str = ""
    sha256: str = ""
    ts: float = Field(0.0, description="when the state was entered")
    bytes: int = Field(0, ge=0, description="downloaded so far")
    total: int = Field(0, ge=0, description="archive size, when the server says it")
    error: str = ""


class StatusPayload(_Payload):
    """status: the daemon's health, retained, every status_interval and on every change."""

    ts: float
    state: Literal["starting", "running", "paused", "stopped"]
    device_id: str = Field(min_length=1)
    software: str = Field(description="coral-classifier version")
    model: ModelInfo
    backend: Literal["cpu", "edgetpu"]
    runtime: str = Field(description="pycoral, ai_edge_litert or tflite_runtime")
    camera: str
    fps: float = Field(ge=0, description="frames classified per second, last interval")
    uptime_s: float = Field(ge=0)
    frames: int = Field(ge=0)
    results_published: int = Field(ge=0)
    dropped_frames: int = Field(ge=0, description="frames dropped: a busy classifier, or in "
                                "flight when the inference worker was restarted")
    errors: dict[str, int] = Field(description="counters by kind: camera, inference, "
                                   "publish, outbox, worker, command")
    last_error: str
    events: int = Field(ge=0, description="events decided since start")
    reconnects: int = Field(ge=0, description="broker reconnections since start")
    commands_dropped: int = Field(0, ge=0, description="commands dropped unanswered since "
                                  "start because too many arrived at once (queue full)")
    worker_restarts: int = Field(0, ge=0, description="inference worker restarts (crash or "
                                 "no answer within model.inference_timeout)")
    frames_seen: int = Field(0, ge=0, description="camera frames (once, not per region)")
    frames_gated: int = Field(0, ge=0, description="camera frames the trigger passed on "
                              "(seen, not classified)")
    trigger: str = Field("always", description="trigger.mode")
    reload_nonce: str = Field("", description="the nonce of the last successful reload "
                              "request, echoed for deploy confirmation")
    last_event_ts: float = Field(0.0, ge=0, description="when the last event was decided "
                                 "(0 = none since start)")
    update: UpdateStatus | None = Field(None, description="the last pull update (cmd/update)"
                                        ": progress, then done, failed or rolled_back")
    outbox: OutboxStatus


class EventPayload(_Payload):
    """event: one decision per object, from the on-disk outbox."""

    event_id: str
    seq: int = Field(ge=1, description="gap-free across restarts: a consumer can prove "
                     "nothing is missing; the only gaps are events the device lost on a "
                     "disk fault, which its status names (outbox.lost_seq)")
    device_id: str
    label: str = Field(description="the class decided; 'unknown' when nothing was "
                       "recognised (see guess)")
    score: float
    frames: int = Field(ge=1)
    first_ts: float
    last_ts: float
    verdict: Literal["accepted", "refused", "unknown"] = Field(
        "accepted", description="accepted: take the note; refused: a known note this machine "
        "does not take (hand it back); unknown: not recognised (hand it back)")
    reason: str = Field("accepted", description="why, as the frames' judge said it: "
                        "accepted, refused, not_in_accept_list, below_threshold, margin, "
                        "out_of_distribution, unknown")
    guess: str | None = Field(None, description="unknown: the class the frames looked most "
                              "like, and its best score in guess_score")
    guess_score: float | None = None
    value: float | None = Field(None, description="what the note is worth, from the "
                                "bundle's denominations (absent: the bundle does not say)")
    currency: str | None = Field(None, description="ISO 4217 code of value, e.g. VND")
    model: ModelInfo = Field(description="the model that classified the frames")
    roi: str = Field("", description="the region of interest the object was seen in "
                     "('' without [[camera.roi]])")


class CountsPayload(_Payload):
    """counts: per-class event counters, retained; survive restarts."""

    ts: float
    since: float = Field(description="when the counts were last reset (0 = never)")
    counts: dict[str, int] = Field(description="events per label (all regions together)")
    by_roi: dict[str, dict[str, int]] = Field(default_factory=dict, description="events per "
                                              "label in each region of interest")


class StatePayload(_Payload):
    """state (or roi/<name>/state): what a region shows now, retained, on change only."""

    state: str = Field(description="a label, 'unknown', or 'empty' (its background)")
    present: bool = Field(description="something is there (state is not 'empty')")
    since: float
    roi: str


class ReplyPayload(BaseModel):
    """cmd/<name>/reply: the outcome of a command (more keys per command)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    ok: bool
    error: str | None = Field(None, description="present when ok is false: what went wrong "
                              "and what to send instead")


PAYLOADS: dict[str, type[BaseModel]] = {
    "result": ResultPayload, "status": StatusPayload, "event": EventPayload,
    "counts": CountsPayload, "reply": ReplyPayload, "state": StatePayload}


@dataclass(frozen=True)
class Result:
    """One classified frame, with where its time went (internal, not a payload)."""

    seq: int
    ts: float
    classification: Classification
    capture_ms: float
    total_ms: float
    prepare_ms: float = 0.0  # the resize done in the capture thread


def model_info(bundle) -> dict[str, str]:
    """A bundle's identity as it appears in payloads."""
    return {"name": bundle.name, "version": bundle.version, "sha256": bundle.sha256}


def result_message(result: Result, model: dict[str, str], backend: str,
                   verdict=None, roi: str = "") -> ResultPayload:
    """verdict: the openset.Verdict of this frame, when the caller judged it. The model,
    not a dict: the stream publishes it straight to JSON (pydantic's serializer)."""
    c = result.classification
    best = c.best
    return ResultPayload(
        ts=round(result.ts, 3), seq=result.seq, label=best.label if best else None,
        score=round(best.score, 5) if best else 0.0,
        top_k=[Ranked(id=k.id, label=k.label, score=round(k.score, 5)) for k in c.top_k],
        model=ModelInfo(**model), backend=backend,
        latency_ms=Latency(capture=round(result.capture_ms, 3),
                           preprocess=round(result.prepare_ms + c.preprocess_ms, 3),
                           inference=round(c.inference_ms, 3),
                           postprocess=round(c.postprocess_ms, 3),
                           total=round(result.total_ms, 3)),
        roi=roi or None, **({} if verdict is None else dict(
            accepted=verdict.accepted, reason=verdict.reason, verdict=verdict.verdict,
            explanation=verdict.explanation,
            # unrounded: a controller re-deciding from the published number must agree
            ood_score=verdict.ood_score)))


def event_payload(event: Event, model: dict[str, str], device_id: str,
                  seq: int, roi: str = "") -> dict[str, Any]:
    return EventPayload(event_id=event.event_id, seq=seq, device_id=device_id, roi=roi,
                        label=event.label, score=round(event.score, 5), frames=event.frames,
                        first_ts=round(event.first_ts, 3), last_ts=round(event.last_ts, 3),
                        verdict=event.verdict, reason=event.reason, guess=event.guess,
                        guess_score=(None if event.guess_score is None
                                     else round(event.guess_score, 5)),
                        value=event.value, currency=event.currency,
                        model=ModelInfo(**model)).model_dump()


def dumps(payload: dict[str, Any] | BaseModel) -> bytes:
    if isinstance(payload, BaseModel):
        return payload.model_dump_json().encode()
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema of a topic's payload, generated from its model."""
    if name == "availability":
        return {"$schema": SCHEMA_URL, "$id": "coral-classifier/availability.schema.json",
                "title": "availability: plain text, retained",
                "description": "online while connected; offline is the broker-sent last will "
                "(crash, power or network loss); stopped after a clean shutdown.",
                "enum": list(AVAILABILITY)}
    return {"$schema": SCHEMA_URL, "$id": f"coral-classifier/{name}.schema.json",
            **PAYLOADS[name].model_json_schema()}


def schema_text(name: str) -> str:
    return json.dumps(schema(name), indent=2, ensure_ascii=False) + "\n"


def load_schema(name: str) -> dict[str, Any]:
    """The committed JSON Schema of a topic's payload ('result', 'status', ...)."""
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())


def write_schemas(folder: Path = SCHEMA_DIR) -> list[Path]:
    """Regenerate device/schemas/ from the models (`python -m device.messages`)."""
    paths = [folder / f"{name}.schema.json" for name in (*PAYLOADS, "availability")]
    for path in paths:
        path.write_text(schema_text(path.name.split(".")[0]))
    return paths


if __name__ == "__main__":
    for p in write_schemas():
        sys.stdout.write(f"wrote {p}\n")
