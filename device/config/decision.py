"""From frames to decisions, and where what must survive a restart is kept."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from device.config.base import Section as _Section
from device.openset import DEFAULT_THRESHOLD


class DecisionConfig(_Section):
    """From frames to decisions. Defaults suit one object passing a camera at 10 fps."""

    mode: Literal["stream", "event"] = Field(
        "stream", description="stream: a result per frame; event: one event per object.")
    threshold: float = Field(DEFAULT_THRESHOLD, ge=0, le=1, description="Top-1 score a "
                             "frame needs to support its class (set: overrides the bundle's "
                             "operating point for every class without its own).")
    background_labels: tuple[str, ...] = Field(
        (), description="Labels meaning 'nothing there' (e.g. an 'empty' slot class).")
    min_frames: int = Field(3, ge=1, le=1000, description="K: supporting frames needed ...")
    window: int = Field(5, ge=1, le=1000, description="... among the last N frames.")
    empty_frames: int = Field(3, ge=1, le=1000, description="M: frames of empty scene that "
                              "end an object and re-arm the decider.")
    margin: float = Field(0.0, ge=0, le=1, description="Top-1 minus top-2 below this is unsure.")
    unknown_labels: tuple[str, ...] = Field(
        (), description="Labels reported as 'unknown' (e.g. a trained 'Other' class).")
    class_thresholds: dict[str, float] = Field(
        default_factory=dict, description="Per-class thresholds overriding `threshold`.")
    accept: tuple[str, ...] | None = Field(
        None, description="The classes this machine accepts (unset: every known class). A "
        "known class not listed is recognised and refused: a `refused` event, the note "
        "handed back.")
    foreign_object: bool = Field(
        True, description="Tell a foreign object from an empty slot: a frame the model "
        "calls empty whose scene differs from the learned empty slot is `unknown` with "
        "reason foreign_object (device/scene.py).")
    foreign_threshold: float = Field(0.15, gt=0, le=1, description="Fraction of the scene "
                                     "that must differ from the empty slot.")
    foreign_pixel_delta: int = Field(30, ge=1, le=255, description="Grey levels a point "
                                     "must differ by to count.")

    @model_validator(mode="after")
    def _checks(self) -> DecisionConfig:
        if self.min_frames > self.window:
            raise ValueError(f"decision.min_frames ({self.min_frames}) cannot exceed "
                             f"decision.window ({self.window})")
        bad = {k: v for k, v in self.class_thresholds.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f"decision.class_thresholds must be within 0..1: {bad}")
        return self


class StateConfig(_Section):
    """Where the daemon keeps what must survive a restart: the event outbox and counts."""

    dir: str = Field("", description="State folder ('' = $STATE_DIRECTORY, set by systemd, "
                     "else ~/.local/state/coral-classifier).")
    outbox_max_events: int = Field(100_000, ge=10, description="Outbox bound (events).")
    outbox_max_bytes: int = Field(50 << 20, ge=10_000, description="Outbox bound (bytes).")
    max_unstored: float = Field(
        60.0, gt=0, description="Seconds decided events may wait in memory because the "
        "outbox cannot be written (disk full, read-only) before the daemon exits for a "
        "restart; they are retried every second meanwhile.")
    spill_bytes: int = Field(
        1 << 20, ge=0, description="A file of this size reserved in the state folder at "
        "start: events the outbox cannot take (disk full) are written there at once and "
        "restored at the next start, whatever the stop; beyond it they are counted as lost "
        "(status outbox.lost, a gap in event seq). 0 = none.")

    def resolved_dir(self) -> Path:
        if self.dir:
            return Path(self.dir).expanduser()
        if os.environ.get("STATE_DIRECTORY"):
            return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
        return Path.home() / ".local" / "state" / "coral-classifier"
