"""The optional sections: metrics, Home Assistant, pull updates, logging."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, model_validator

from device.config.base import Section as _Section
from device.config.base import check_topic as _check_topic


class MetricsConfig(_Section):
    port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port (0 = off).")
    address: str = Field("0.0.0.0", description="Address the metrics endpoint listens on.")

    @model_validator(mode="after")
    def _address(self) -> MetricsConfig:
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            raise ValueError(f"metrics.address {self.address!r} must be an IP address such "
                             "as 0.0.0.0, 127.0.0.1 or ::") from None
        return self


class HomeAssistantConfig(_Section):
    enabled: bool = Field(False, description="Publish Home Assistant MQTT discovery.")
    discovery_prefix: str = Field("homeassistant", min_length=1,
                                  description="Home Assistant's discovery prefix.")

    @model_validator(mode="after")
    def _prefix(self) -> HomeAssistantConfig:
        _check_topic("homeassistant.discovery_prefix", self.discovery_prefix, levels=True)
        return self


class UpdateConfig(_Section):
    """Pull updates: `cmd/update {envelope, signature}` (device/daemon/update.py)."""

    enabled: bool = Field(True, description="Accept cmd/update (false: refuse every update).")
    public_key: str = Field(
        "", description="Ed25519 public key (base64 of its 32 bytes, or a PEM file's path) "
        "that signs update envelopes (`make keys` makes the pair).")
    allow_unsigned: bool = Field(
        False, description="Opt out of signing: accept unsigned {url, sha256, version} "
        "requests from anyone who may publish cmd/update (doctor warns).")
    allow_downgrade: bool = Field(
        False, description="Accept versions older than the one serving (replays of old "
        "signed updates); a request may also carry allow_downgrade in its signed envelope.")
    fleet: str = Field("", max_length=64, description="Fleet id: envelopes signed for this "
                       "fleet are accepted as well as those naming this device.")
    allowed_schemes: tuple[Literal["https", "http", "file"], ...] = Field(
        ("https", "file"), description="Where updates may come from (redirects included): "
        "https, http (a trusted network only), file (an absolute path on the device).")
    max_bytes: int = Field(200 << 20, ge=1024, description="Largest archive accepted.")
    max_files: int = Field(1000, ge=4, le=100_000, description="Most files and folders an "
                           "archive may hold.")
    reserve_bytes: int = Field(64 << 20, ge=0, description="Free space an update leaves on "
                               "the models disk (checked before and while downloading).")
    timeout: float = Field(30.0, gt=0, le=600, description="Seconds a download may stall; "
                           "also the window min_rate is measured over.")
    min_rate: int = Field(1024, ge=0, description="Slowest download accepted, in bytes/s "
                          "over each `timeout` window (0 = no minimum).")
    deadline: float = Field(900.0, gt=0, le=86400, description="Seconds a whole download "
                            "may take, resumes included.")
    keep: int = Field(3, ge=2, le=100, description="Versions kept in models/ (current and "
                      "previous included).")
    lock_wait: float = Field(300.0, ge=0, description="Seconds to wait for a running deploy "
                             "(models/.deploy.lock) before refusing.")

    @model_validator(mode="after")
    def _fleet(self) -> UpdateConfig:
        if self.fleet:
            _check_topic("update.fleet", self.fleet, levels=False)
        return self


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
