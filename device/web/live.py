"""What the live page shows, taken from the pipeline (never a second capture).

The results thread calls `tap()` with every classified frame: it keeps a reference to the
newest one and wakes viewers only when there are any, so with nobody watching a frame
costs one attribute store. JPEG encoding (scaled down, ROI outlines, the top-k drawn in)
happens in the viewer's own request thread, once per frame however many viewers share it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from device.openset import REASONS


@dataclass(frozen=True)
class Latest:
    frame: Any
    top_k: tuple
    verdict: Any
    model: dict[str, str]


def roi_boxes(rois) -> list[dict[str, Any]]:
    """[[camera.roi]] entries as name + fractions of the frame (none: empty list)."""
    return [{"name": r.name, "x": r.x, "y": r.y, "width": r.width, "height": r.height}
            for r in rois or ()]


def draw(image: np.ndarray, width: int, rois: list[dict[str, Any]], top_k,
         regions: dict[str, tuple] | None = None) -> np.ndarray:
    """A BGR copy scaled to `width`, with ROI outlines and the top-k written in."""
    h, w = image.shape[:2]
    scale = min(1.0, width / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    bgr = cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                       if scale < 1.0 else image, cv2.COLOR_RGB2BGR)
    for r in rois:
        x0, y0 = round(r["x"] * size[0]), round(r["y"] * size[1])
        x1 = round((r["x"] + r["width"]) * size[0]) - 1
        y1 = round((r["y"] + r["height"]) * size[1]) - 1
        cv2.rectangle(bgr, (x0, y0), (x1, y1), (0, 200, 255), 2)
        best = (regions or {}).get(r["name"], ())[:1]
        text = r["name"] + (f": {best[0].label} {best[0].score:.2f}" if best else "")
        cv2.putText(bgr, text, (x0 + 4, y0 + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 200, 255), 1, cv2.LINE_AA)
    shown = top_k[:3]
    if shown:  # white on a dark band along the bottom edge
        top = size[1] - 8 - 20 * len(shown)
        band = bgr[max(0, top):, :]
        band[:] = band // 3
    for i, k in enumerate(shown):
        org = (8, size[1] - 10 - 20 * (len(shown) - 1 - i))
        cv2.putText(bgr, f"{k.label} {k.score:.2f}", org, cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return bgr


def verdict_fields(v) -> dict[str, Any]:
    """A judge() Verdict as the page shows it: the one vocabulary (accepted, refused, empty,
    unknown), the reason in plain language, and the best guess behind a refusal. The upload
    answer should carry the same fields (`**verdict_fields(verdict)`)."""
    if v is None:
        return {"accepted": None, "reason": "", "verdict": "", "explanation": ""}
    return {"accepted": v.accepted, "reason": v.reason, "verdict": v.verdict,
            "explanation": v.explanation}


def event_verdict(event) -> dict[str, Any]:
    """An event's verdict as the decider gave it, the reason in plain language, and for an
    `unknown` the class it looked most like."""
    return {"verdict": event.verdict, "reason": event.reason,
            "explanation": REASONS.get(event.reason, event.reason),
            "guess": event.guess or "", "guess_score": event.guess_score,
            "value": event.value, "currency": event.currency}


class LiveHub:
    """The newest classified frame, recent events with thumbnails, and the viewers."""

    def __init__(self, width: int = 640, rois=(), connected: Callable[[], bool] | None = None,
                 broker: str = ""):
        self.width = width
        self.rois = roi_boxes(rois)
        self.connected = connected  # is the MQTT session up? (None: not known here)
        self.broker = broker
        self.latest: Latest | None = None
        self.regions: dict[str, tuple] = {}  # region name -> its newest top-k
        self.watchers = 0
        self.cond = threading.Condition()
        self._jpeg: tuple[int, bytes] = (-1, b"")
        self._encode_lock = threading.Lock()
        self.events: deque[dict[str, Any]] = deque(maxlen=24)
        self.thumbs: dict[str, bytes] = {}

    # -- the results thread ----------------------------------------------------------------
    def tap(self, frame, c, spec, verdict) -> None:
        roi = getattr(frame, "roi", "")  # [[camera.roi]]: one frame per region
        if roi:
            self.regions[roi] = c.top_k
            if frame.roi_index:
                return  # the same picture as region 0's frame
        self.latest = Latest(frame, c.top_k, verdict, spec.info())
        if self.watchers:
            with self.cond:
                self.cond.notify_all()

    def event(self, event) -> None:
        """An event was decided: remember it with a small picture of its last frame."""
        latest = self.latest
        thumb = b""
        if latest is not None:
            img = latest.frame.image
            small = cv2.resize(img, (160, max(1, round(img.shape[0] * 160 / img.shape[1]))),
                               interpolation=cv2.INTER_AREA)
            ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
            thumb = jpg.tobytes() if ok else b""
        if len(self.events) == self.events.maxlen:
            self.thumbs.pop(self.events[0]["event_id"], None)
        self.events.append({"event_id": event.event_id, "label": event.label,
                            "score": round(event.score, 4), "frames": event.frames,
                            "ts": round(event.last_ts, 3), **event_verdict(event)})
        self.thumbs[event.event_id] = thumb

    # -- viewers ------------------------------------------------------------------------
    def mqtt(self) -> dict[str, Any]:
        """The page's connection indicator: is the daemon's MQTT session up?"""
        return {"connected": None if self.connected is None else bool(self.connected()),
                "broker": self.broker}

    def summary(self) -> dict[str, Any]:
        """What /api/live answers: the newest frame's top-k and verdict, the MQTT state."""
        latest = self.latest
        if latest is None:  # the same keys before the first frame
            return {"seq": None, "rois": self.rois, "regions": {}, "top_k": [],
                    "mqtt": self.mqtt(), **verdict_fields(None)}
        regions = {name: [{"label": k.label, "score": round(k.score, 4)} for k in top]
                   for name, top in self.regions.items()}
        return {"seq": latest.frame.seq, "ts": round(latest.frame.ts, 3), "rois": self.rois,
                "regions": regions,
                "top_k": [{"label": k.label, "score": round(k.score, 4)} for k in latest.top_k],
                "mqtt": self.mqtt(), **verdict_fields(latest.verdict), "model": latest.model}

    def wait_newer(self, seq: int, timeout: float) -> Latest | None:
        """The newest frame once it is newer than `seq` (None after timeout)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                latest = self.latest
                if latest is not None and latest.frame.seq != seq:
                    return latest
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def jpeg(self, latest: Latest) -> bytes:
        """The frame drawn and encoded, shared by every viewer."""
        with self._encode_lock:
            if self._jpeg[0] != latest.frame.seq:
                bgr = draw(latest.frame.image, self.width, self.rois,
                           () if self.rois else latest.top_k, self.regions)
                ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 80])
                self._jpeg = (latest.frame.seq, jpg.tobytes() if ok else b"")
            return self._jpeg[1]

    def watch(self, delta: int) -> None:
        with self.cond:
            self.watchers += delta
