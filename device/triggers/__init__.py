"""Triggers: which frames are worth an inference. One module per `trigger.mode`, behind the
Trigger interface, from one registry (hardware imports live only in their backend)."""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

from device.regions import RoiConfig, TriggerConfig


class Trigger(Protocol):
    def wants(self, image: np.ndarray, ts: float) -> bool:
        """Should this frame be classified? Called once per frame, on the capture thread."""

    def close(self) -> None: ...


TRIGGERS = {
    "always": "device.triggers.always:Always",
    "motion": "device.triggers.motion:Motion",
    "interval": "device.triggers.interval:Interval",
    "gpio": "device.triggers.gpio:Gpio",
}


def create_trigger(cfg: TriggerConfig, rois: tuple[RoiConfig, ...] = ()) -> Trigger:
    """The trigger named by cfg.mode (ValueError listing the valid ones otherwise)."""
    if cfg.mode not in TRIGGERS:
        raise ValueError(f"unknown trigger mode {cfg.mode!r}: choose one of "
                         + ", ".join(TRIGGERS))
    module, cls = TRIGGERS[cfg.mode].split(":")
    return getattr(importlib.import_module(module), cls)(cfg, rois)
