"""The daemon's one validated configuration object, read from a TOML file.

Unknown keys are rejected by name (a typo must not silently fall back to a default),
every field carries its default and a description, and secrets come from a file or an
environment variable rather than the config file itself.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from device.errors import ConfigError
from device.openset import DEFAULT_THRESHOLD
from device.regions import RoiConfig, TriggerConfig
from device.sections import (
    HomeAssistantConfig,
    LogConfig,
    MetricsConfig,
    UpdateConfig,
    _check_topic,
)
from device.webconfig import CaptureConfig, WebConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraConfig(_Section):
    """Where frames come from."""

    type: Literal["picamera2", "opencv", "replay"] = Field(
        "replay", description="Frame source backend: picamera2 | opencv | replay."
    )
    source: str = Field(
        "",
        description="replay: a folder of images or a video file; opencv: a device index "
        "('0') or a URL (rtsp://...); picamera2: the camera number ('' = 0).",
    )
    fps: float = Field(10.0, gt=0, le=1000, description="Frames per second to deliver.")
    loop: bool = Field(True, description="replay: start again at the end.")
    width: int = Field(640, ge=16, le=8192, description="Capture width (picamera2 / opencv).")
    height: int = Field(480, ge=16, le=8192, description="Capture height (picamera2 / opencv).")
    isp_resize: bool = Field(
        True,
        description="picamera2: let the ISP scale the sensor down to (about) the model's "
        "input size with the model's framing, so the CPU resizes little or nothing.",
    )
    roi: tuple[RoiConfig, ...] = Field(
        (), description="Regions of interest ([[camera.roi]]), each classified as its own "
        "stream; none = the whole frame.")
    pixel_format: Literal["BGR888", "RGB888"] = Field(
        "BGR888",
        description="picamera2 pixel format. picamera2's 'BGR888' is R,G,B in memory (what "
        "the model wants); 'RGB888' is B,G,R in memory and is swapped for you.",
    )


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


class MqttConfig(_Section):
    """The broker connection and what is published."""

    host: str = Field("localhost", min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    client_id: str = Field("", description="MQTT client id ('' = coral-classifier-<device_id>-"
                           "<random suffix kept in the state folder>: unique per install).")
    keepalive: int = Field(30, ge=5, le=3600, description="Keepalive in seconds.")
    qos: Literal[0, 1, 2] = Field(0, description="QoS of result messages.")
    topic_prefix: str = Field(
        "coral-classifier", min_length=1, description="Topics live under <prefix>/<device_id>/."
    )
    device_id: str = Field("", description="This device's id in topics ('' = the host name).")
    username: str = Field("", description="Username ('' = anonymous).")
    password_file: str = Field("", description="File holding the password (first line).")
    password_env: str = Field(
        "", description="Environment variable holding the password (used if set)."
    )
    tls: bool = Field(False, description="Connect with TLS.")
    ca_file: str = Field("", description="CA certificate to verify the broker ('' = system CAs).")
    cert_file: str = Field("", description="Client certificate for mutual TLS.")
    key_file: str = Field("", description="Client private key for mutual TLS.")
    tls_insecure: bool = Field(
        False, description="Skip verifying the broker's host name. Only for testing."
    )
    status_interval: float = Field(
        10.0, gt=0, le=3600, description="Seconds between retained status refreshes."
    )
    result_max_rate: float = Field(
        0.0, ge=0, description="Max result messages per second (0 = one per frame)."
    )
    commands: bool = Field(True, description="Accept commands on cmd/ (false: ignore them).")

    max_disconnected: float = Field(
        600.0, gt=0, description="Seconds the broker may be unreachable before the systemd "
        "watchdog is no longer fed (a restart then rebuilds the network side).")

    @model_validator(mode="after")
    def _checks(self) -> MqttConfig:
        _check_topic("mqtt.topic_prefix", self.topic_prefix, levels=True)
        if self.device_id:
            _check_topic("mqtt.device_id", self.device_id, levels=False)
        if self.client_id and not re.match(r"^[\x21-\x7e]{1,128}$", self.client_id):
            raise ValueError("mqtt.client_id must be 1-128 printable ASCII characters")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("mqtt.cert_file and mqtt.key_file go together: set both or neither")
        return self

    def resolved_device_id(self) -> str:
        """The configured id, else the host name made topic-safe."""
        if self.device_id:
            return self.device_id
        host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64]
        return host or "coral-classifier"

    def password(self) -> str | None:
        """The password from the environment or a file; None when neither is set."""
        if self.password_env and os.environ.get(self.password_env):
            return os.environ[self.password_env]
        if self.password_file:
            try:
                return Path(self.password_file).read_text().splitlines()[0].strip()
            except (OSError, IndexError) as exc:
                raise ConfigError(
                    f"mqtt.password_file {self.password_file!r} cannot be read ({exc}): "
                    "put the password on its first line and make it readable by the daemon"
                ) from exc
        return None


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
