"""The web page and frame capture sections."""

from __future__ import annotations

import ipaddress
import re

from pydantic import Field, model_validator

from device.config.base import Section as _Section

HASH_FORMAT = re.compile(r"^scrypt\$[0-9]+\$[0-9]+\$[0-9]+\$[0-9a-f]{16,}\$[0-9a-f]{32,}$")


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


class WebConfig(_Section):
    """The daemon's local web page: live view, events, status, upload, labelling."""

    enabled: bool = Field(False, description="Serve the web page (false: no server, no "
                          "per-frame work at all).")
    address: str = Field("127.0.0.1", description="Address to listen on. Anything but a "
                         "loopback address needs password_hash.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0 = any free port, "
                      "logged).")
    password_hash: str = Field(
        "", description="scrypt hash of the password (or token) the page asks for: make it "
        "with `python -m device.web.auth`. Required off loopback.")
    stream_fps: float = Field(5.0, gt=0, le=30, description="Live view frames per second "
                              "at most (JPEG encoding happens only while someone watches).")
    stream_width: int = Field(640, ge=64, le=4096, description="Live view width in pixels "
                              "(frames are scaled down to it).")
    max_upload: int = Field(16 << 20, ge=1 << 16, description="Largest photo the upload "
                            "page accepts, in bytes.")
    max_pixels: int = Field(40_000_000, ge=1 << 16, description="Largest photo the upload "
                            "page decodes, in pixels (width x height, read from the file's "
                            "header first: a small PNG can hide gigabytes of pixels).")
    max_connections: int = Field(32, ge=4, le=1000, description="Connections open at once "
                                 "at most; more are answered 503 and closed (keeps the "
                                 "daemon's file descriptors for MQTT and the camera).")
    workers: int = Field(6, ge=2, le=64, description="Threads answering requests. A "
                         "connection gets one only once its headers have arrived.")
    max_streams: int = Field(2, ge=1, description="Live views (MJPEG streams) open at once "
                             "at most; each holds a worker. Must be below workers.")
    header_timeout: float = Field(10.0, gt=0, le=300, description="Seconds a client has to "
                                  "send its request line and headers, in total.")
    request_timeout: float = Field(30.0, gt=0, le=600, description="Seconds a request may "
                                   "take in total once its headers are in (body, work, "
                                   "reply); then the connection is cut. Not the live stream.")
    max_password_checks: int = Field(2, ge=1, le=16, description="Password checks (scrypt, "
                                     "~16 MiB each) running at once at most.")
    login_free_failures: int = Field(5, ge=1, description="Wrong passwords a client address "
                                     "may send before it must wait 1, 2, 4 ... seconds "
                                     "between guesses (429).")
    login_max_backoff: float = Field(300.0, ge=1, description="Longest wait, in seconds, "
                                     "imposed after wrong passwords.")

    @model_validator(mode="after")
    def _checks(self) -> WebConfig:
        try:
            loopback = is_loopback(self.address)
        except ValueError:
            raise ValueError(f"web.address {self.address!r} must be an IP address such as "
                             "127.0.0.1, 0.0.0.0 or ::") from None
        if self.password_hash and not HASH_FORMAT.match(self.password_hash):
            raise ValueError("web.password_hash is not a hash made by `python -m "
                             "device.web.auth` (never put the password itself here)")
        if self.max_streams >= self.workers:
            raise ValueError(f"web.max_streams ({self.max_streams}) must be below web.workers "
                             f"({self.workers}): each live view holds a worker")
        if self.enabled and not loopback and not self.password_hash:
            raise ValueError(f"web.address {self.address} is reachable from other machines: "
                             "set web.password_hash (`python -m device.web.auth`) or listen "
                             "on 127.0.0.1")
        return self


class CaptureConfig(_Section):
    """Frames kept for training under <state>/dataset (captures) and <state>/doubtful."""

    max_bytes: int = Field(500 << 20, ge=1 << 20, description="Captured dataset bound "
                           "(bytes); a capture stops when it is reached.")
    min_free_bytes: int = Field(100 << 20, ge=0, description="Free space kept on the "
                                "state disk for the outbox and the system: captures stop and "
                                "doubtful frames are not kept below it.")
    quality: int = Field(92, ge=50, le=100, description="JPEG quality of saved frames.")
    keep_doubtful: bool = Field(False, description="Keep doubtful frames automatically: "
                                "behind unknown events, below the operating threshold while "
                                "something is present, or top two within doubtful_margin.")
    doubtful_margin: float = Field(0.1, ge=0, le=1, description="Top-1 minus top-2 below "
                                   "this makes a frame doubtful (0 = never for this reason).")
    doubtful_max_files: int = Field(500, ge=1, description="Doubtful ring bound (frames); "
                                    "the oldest go first.")
    doubtful_max_bytes: int = Field(200 << 20, ge=1 << 20, description="Doubtful ring "
                                    "bound (bytes).")
    doubtful_interval: float = Field(2.0, ge=0, description="Seconds between two kept "
                                     "doubtful frames at least (rate limit).")
