"""trigger.mode = "gpio": an edge on an input pin (a coin mech, a slot switch, a light
barrier) starts a burst of `burst_frames` classified frames.

gpiozero is imported only here (it is on Raspberry Pi OS as python3-gpiozero, and uses
lgpio on a Pi 5); its MockFactory pin is the stand-in the tests use.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from device.errors import CameraError
from device.regions import RoiConfig, TriggerConfig

log = logging.getLogger(__name__)


class Gpio:
    def __init__(self, cfg: TriggerConfig, rois: tuple[RoiConfig, ...] = ()):
        try:
            from gpiozero import Button  # type: ignore[import-not-found]
            from gpiozero.exc import GPIOZeroError  # type: ignore[import-not-found]
        except ImportError as exc:
            raise CameraError(f"trigger.mode = \"gpio\" needs gpiozero ({exc}): sudo apt "
                              "install python3-gpiozero (the venv sees system packages)") \
                from None
        self.burst = cfg.burst_frames
        self.left = 0
        self.edges = 0
        self.lock = threading.Lock()
        try:
            self.button = Button(cfg.gpio_pin, pull_up=cfg.gpio_pull_up, bounce_time=0.01)
        except (GPIOZeroError, ValueError, OSError) as exc:
            raise CameraError(f"trigger.gpio_pin {cfg.gpio_pin!r} cannot be used ({exc}): "
                              "check the pin name and that the service user is in the "
                              "gpio group") from None
        # gpiozero's "pressed" is the active edge: rising with a pull-down, falling with a
        # pull-up; gpio_edge picks the other one when asked
        active = (cfg.gpio_edge == "rising") != cfg.gpio_pull_up
        if active:
            self.button.when_pressed = self._edge
        else:
            self.button.when_released = self._edge
        log.info("GPIO trigger on %s (%s edge): bursts of %d frames", cfg.gpio_pin,
                 cfg.gpio_edge, self.burst)

    def _edge(self, *_: object) -> None:
        with self.lock:
            self.edges += 1
            self.left = self.burst

    def wants(self, image: np.ndarray, ts: float) -> bool:
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True

    def close(self) -> None:
        self.button.close()
