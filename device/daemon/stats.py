"""The daemon's counters, and the status snapshot that status, metrics and Home Assistant
discovery are all fed from (none of them reaches into the daemon itself)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

log = logging.getLogger(__name__)

ERROR_KINDS = ("camera", "inference", "publish", "outbox", "worker", "command")


class Stats:
    """Counters written by the daemon's threads; each write is one small locked step."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.frames = self.published = self.events = 0
        self.seen = self.gated = 0  # camera frames, and those the trigger passed on
        self.errors: Counter[str] = Counter(dict.fromkeys(ERROR_KINDS, 0))
        self.last_error = ""
        self.fps = 0.0
        self._fps_window = (time.monotonic(), 0)
        self.last_event_ts = 0.0

    def error(self, kind: str, message: str, level: int = logging.WARNING) -> None:
        with self.lock:
            self.errors[kind] += 1
            self.last_error = message
        log.log(level, "%s", message)

    def clear_error(self, message: str) -> None:
        """Forget last_error if it is still this one (a recovered condition)."""
        with self.lock:
            if self.last_error == message:
                self.last_error = ""

    def frame(self, now: float) -> None:
        self.frames += 1  # only the frame loop writes frames and fps
        t0, n0 = self._fps_window
        if now - t0 >= 1.0:
            self.fps = (self.frames - n0) / (now - t0)
            self._fps_window = (now, self.frames)

    def seen_frame(self, frame) -> None:
        """A frame from the camera (counted once, not once per region; not web uploads)."""
        if frame.roi_index == 0 and frame.from_camera:
            self.seen += 1  # only the frame loop writes these
            if frame.gated:
                self.gated += 1

    def published_one(self) -> None:
        self.published += 1  # only the results thread publishes results

    def event(self, ts: float) -> None:
        with self.lock:
            self.events += 1
            self.last_event_ts = ts

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started

    def error_counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.errors)


class CameraFailures:
    """Consecutive camera errors: back off between retries (0.5 s doubling up to 8 s), and
    give up after `limit` in a row so systemd restarts the daemon with a fresh camera."""

    def __init__(self, limit: int):
        self.limit, self.count = limit, 0

    @property
    def backoff(self) -> float:
        return min(8.0, 0.25 * 2 ** self.count)

    def failed(self) -> bool:
        """Count one; True when that was one too many."""
        self.count += 1
        if self.count >= self.limit:
            log.error("camera failed %d times in a row; exiting for a restart", self.count)
            return True
        return False
