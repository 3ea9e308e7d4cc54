"""Which model runs, and on what."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from device.config.base import Section as _Section


class ModelConfig(_Section):
    """Which model runs, and on what."""

    path: str = Field(
        "compiled_models/demo-notes",
        description="A bundle folder (manifest.json, labels.txt, model_quant*.tflite) or a "
        "bare .tflite file.",
    )
    labels: str = Field("", description="Labels file, for a bare .tflite only.")
    backend: Literal["auto", "edgetpu", "cpu"] = Field(
        "auto",
        description="auto: the Edge TPU when present, else the CPU if allow_cpu_fallback; "
        "edgetpu: the Edge TPU or fail; cpu: the CPU runtime.",
    )
    allow_cpu_fallback: bool = Field(
        False, description="backend=auto: run on the CPU when no Edge TPU is found."
    )
    device: str = Field(
        "", description="Edge TPU to use: '' (first found), 'usb', 'usb:N', 'pci', 'pci:N'."
    )
    num_threads: int = Field(2, ge=1, le=64, description="CPU backend threads.")
    top_k: int = Field(3, ge=1, le=100, description="How many ranked classes to publish.")
    min_score: float = Field(
        0.0, ge=0.0, le=1.0, description="Classes below this score are left out of top_k."
    )
    inference_timeout: float = Field(
        5.0, gt=0, le=600, description="Seconds one frame may take in the inference worker "
        "before it counts as hung and is restarted (a wedged Edge TPU).")
    load_timeout: float = Field(
        120.0, gt=0, le=3600, description="Seconds loading and self-testing a model may take.")

    @model_validator(mode="after")
    def _device_syntax(self) -> ModelConfig:
        dev = self.device
        if dev and not (dev in ("usb", "pci") or _is_indexed(dev, ("usb:", "pci:"))):
            raise ValueError(f"model.device {dev!r} must be '', 'usb', 'usb:N', 'pci' or 'pci:N'")
        return self


def _is_indexed(value: str, prefixes: tuple[str, ...]) -> bool:
    return any(value.startswith(p) and value[len(p) :].isdigit() for p in prefixes)
