"""The daemon's one validated configuration object, read from a TOML file.

Unknown keys are rejected by name (a typo must not silently fall back to a default),
every field carries its default and a description, and secrets come from a file or an
environment variable rather than the config file itself.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError, model_validator

from device.config.base import Section as _Section
from device.config.camera import CameraConfig, RoiConfig, TriggerConfig
from device.config.decision import DecisionConfig, StateConfig
from device.config.extras import HomeAssistantConfig, LogConfig, MetricsConfig, UpdateConfig
from device.config.model import ModelConfig
from device.config.mqtt import MqttConfig
from device.config.web import CaptureConfig, WebConfig
from device.errors import ConfigError

__all__ = ["CameraConfig", "CaptureConfig", "Config", "ConfigError", "DecisionConfig",
           "HomeAssistantConfig", "LogConfig", "MetricsConfig", "ModelConfig", "MqttConfig",
           "RoiConfig", "StateConfig", "TriggerConfig", "UpdateConfig", "WebConfig",
           "load_config", "parse_config"]


class Config(_Section):
    """The whole daemon configuration."""

    camera: CameraConfig = CameraConfig()
    model: ModelConfig = ModelConfig()
    mqtt: MqttConfig = MqttConfig()
    decision: DecisionConfig = DecisionConfig()
    state: StateConfig = StateConfig()
    metrics: MetricsConfig = MetricsConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    web: WebConfig = WebConfig()
    capture: CaptureConfig = CaptureConfig()
    trigger: TriggerConfig = TriggerConfig()
    log: LogConfig = LogConfig()
    update: UpdateConfig = UpdateConfig()

    @model_validator(mode="after")
    def _roi_names(self) -> Config:
        names = [r.name for r in self.camera.roi]
        if len(set(names)) != len(names):
            raise ValueError(f"camera.roi names must be unique, got {names}")
        return self


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (a typo?): see device/example.toml for the valid keys"
        elif e["type"] == "literal_error":
            msg = f"{msg}, got {e.get('input')!r}"
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        lines.append(f"  {key}: {msg}")
    return "invalid configuration:\n" + "\n".join(lines)


def parse_config(data: dict) -> Config:
    """Validate a parsed TOML mapping into a Config, or raise ConfigError naming the keys.

    Relative paths in the config are taken from the working directory (systemd sets it).
    """
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found: copy device/example.toml") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return parse_config(data)
