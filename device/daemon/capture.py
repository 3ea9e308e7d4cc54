"""Frames kept for training: captures on command (cmd/capture) into <state>/dataset/<label>/
and doubtful frames, automatically, into a bounded, rate-limited ring <state>/doubtful/.

The results thread only decides and queues (a reference to the frame, no copy, no I/O);
JPEG encoding and the disk happen on this module's own writer thread, whose queue is
bounded (a slow card skips frames, counted, it never slows the pipeline). Each frame is
saved twice: at capture resolution (what `coral-train` reads: the trainer resizes by the
bundle's policy itself) and as the model saw it (under `.model/`, which the trainer
skips), next to a JSON sidecar with its top-k, verdict and model.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from device import processing
from device.config.web import CaptureConfig
from device.decision import UNKNOWN

log = logging.getLogger(__name__)

LABEL = re.compile(r"^(?!\.)[A-Za-z0-9_.-]{1,64}$")
UNLABELLED = "_unlabelled"
REJECTED = "_rejected"
MAX_FRAMES = 10_000
UNKNOWN_FRAMES = 3  # frames kept behind one unknown event


def check_label(label: object) -> str:
    """A class folder name: letters, digits, - _ . (no leading dot), or ValueError."""
    if not isinstance(label, str) or not LABEL.match(label) or label in (".", ".."):
        raise ValueError("label must be 1-64 letters, digits, '-', '_' or '.' (not starting "
                         f"with '.'), e.g. '10000_vnd' or '{UNLABELLED}'")
    return label


def doubtful_reason(c, verdict, margin: float) -> str:
    """Why a classified frame is worth a human look ('' when it is not)."""
    if verdict.reason in ("unknown", "out_of_distribution"):
        return verdict.reason
    if verdict.reason == "background":
        return ""  # nothing there
    if verdict.reason == "below_threshold":
        return "below_threshold"
    top = c.top_k
    if margin and len(top) >= 2 and top[0].score - top[1].score < margin:
        return "margin"
    return ""


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


@dataclass
class Job:
    label: str
    left: int
    every: float
    next_ts: float = 0.0
    saved: int = 0


@dataclass(frozen=True)
class Save:
    root: Path
    label: str
    frame: Any
    info: dict[str, Any]
    size: tuple[int, int, str]  # the model's width, height and resize policy


class Recorder:
    """Takes frames from the results thread (`tap`) while a capture runs or when doubtful
    frames are kept; `watching` is False otherwise and the daemon does not call it."""

    def __init__(self, cfg: CaptureConfig, state_dir: Path, device_id: str, rois=()):
        self.cfg = cfg
        self.rois = {r.name: r for r in rois}  # a region's frame is saved as its crop
        self.dataset = state_dir / "dataset"
        self.doubtful = state_dir / "doubtful"
        self.device_id = device_id
        self.job: Job | None = None
        self.lock = threading.Lock()
        self.recent: deque = deque(maxlen=8)  # for the frames behind an unknown event
        self.next_doubtful = 0.0
        self.saved = {"capture": 0, "doubtful": 0}
        self.skipped = 0
        self.full = ""
        self.dataset_bytes = -1  # measured once, then counted
        self.queue: queue.Queue[Save | None] = queue.Queue(16)
        self.writer = threading.Thread(target=self._write_loop, name="capture-writer",
                                       daemon=True)
        self.writer.start()

    @property
    def watching(self) -> bool:
        return self.job is not None or self.cfg.keep_doubtful

    # -- commands ------------------------------------------------------------------------
    def start(self, label: str, frames: int, every: float) -> dict[str, Any]:
        """Begin saving `frames` frames, one every `every` seconds, under label."""
        label = check_label(label)
        low = self._low_on_space(1 << 20)  # room for some frames above the reserve
        if low:
            return {"ok": False, "error": low}
        with self.lock:
            if self.job is not None:
                return {"ok": False, "error": f"a capture of {self.job.left} more frame(s) "
                        f"into {self.job.label!r} is running: wait for it"}
            self.job = Job(label, frames, every)
        folder = self.dataset / label
        log.info("capturing %d frame(s) every %g s into %s", frames, every, folder)
        return {"ok": True, "label": label, "frames": frames, "every": every,
                "folder": str(folder)}

    def progress(self) -> dict[str, Any]:
        job = self.job
        return {"running": job is not None, "label": job.label if job else "",
                "left": job.left if job else 0, "saved": dict(self.saved),
                "skipped": self.skipped, "full": self.full}

    # -- the results thread ----------------------------------------------------------------
    def tap(self, frame, c, spec, verdict) -> None:
        job = self.job
        if job is not None and frame.ts >= job.next_ts:
            job.next_ts = frame.ts + job.every
            job.left -= 1
            self._queue(self.dataset, job.label, frame, c, spec, verdict, "capture")
            if job.left <= 0:
                self.job = None
                log.info("capture into %r done", job.label)
        if self.cfg.keep_doubtful:
            self.recent.append((frame, c, spec, verdict))
            reason = doubtful_reason(c, verdict, self.cfg.doubtful_margin)
            if reason and reason != "unknown":
                self._doubtful(frame, c, spec, verdict, reason)

    def event(self, event) -> None:
        """The event sink decided an event: keep the frames behind an unknown one."""
        if not self.cfg.keep_doubtful or event.label != UNKNOWN:
            return
        behind = [r for r in self.recent if event.first_ts <= r[0].ts <= event.last_ts]
        for frame, c, spec, verdict in behind[-UNKNOWN_FRAMES:]:
            self._queue(self.doubtful, "", frame, c, spec, verdict, "unknown_event",
                        event_id=event.event_id)

    def _doubtful(self, frame, c, spec, verdict, reason: str) -> None:
        now = time.monotonic()
        if now < self.next_doubtful:
            return
        self.next_doubtful = now + self.cfg.doubtful_interval
        self._queue(self.doubtful, "", frame, c, spec, verdict, reason)

    def _queue(self, root: Path, label: str, frame, c, spec, verdict, reason: str,
               **extra: Any) -> None:
        info = {"device_id": self.device_id, "ts": round(frame.ts, 3), "seq": frame.seq,
                "roi": getattr(frame, "roi", ""),
                "reason": reason, "top_k": [{"id": k.id, "label": k.label,
                                             "score": round(k.score, 5)} for k in c.top_k],
                "verdict": {"label": verdict.label, "accepted": verdict.accepted,
                            "reason": verdict.reason, "ood_score": verdict.ood_score},
                "model": spec.info(), **extra}
        try:
            self.queue.put_nowait(Save(root, label, frame, info,
                                       (spec.width, spec.height, spec.resize)))
        except queue.Full:
            self.skipped += 1

    # -- the writer thread ---------------------------------------------------------------
    def _write_loop(self) -> None:
        while (item := self.queue.get()) is not None:
            try:
                self._write(item)
            except OSError as exc:
                self.skipped += 1
                log.warning("could not save a frame under %s: %s", item.root, exc)

    def _write(self, item: Save) -> None:
        frame, info = item.frame, item.info
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(frame.ts))
        name = f"{self.device_id}__{stamp}-{int(frame.ts * 1000) % 1000:03d}_{frame.seq}"
        q = [cv2.IMWRITE_JPEG_QUALITY, self.cfg.quality]
        image = frame.image
        roi = self.rois.get(getattr(frame, "roi", ""))
        if roi is not None:
            from device.regions import crop

            image = crop(image, roi)
            name += f"_{roi.name}"
        ok, full = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), q)
        w, h, policy = item.size
        model_view = processing.resize(image, w, h, policy)
        ok2, small = cv2.imencode(".png", cv2.cvtColor(model_view, cv2.COLOR_RGB2BGR))
        if not (ok and ok2):
            raise OSError("a frame could not be encoded")
        side = json.dumps(info, indent=1).encode()
        size = len(full) + len(small) + len(side)
        # on disk: whole blocks per file, and room for new folders
        low = self._low_on_space(sum(-(-n // 4096) * 4096 for n in (
            len(full), len(small), len(side))) + 2 * 4096)
        if low:
            return self._no_room(item, low)
        if item.root == self.dataset:
            if self.dataset_bytes < 0:
                self.dataset_bytes = folder_bytes(self.dataset) if self.dataset.exists() else 0
            if self.dataset_bytes + size > self.cfg.max_bytes:
                self.full = (f"{self.dataset} reached capture.max_bytes "
                             f"({self.cfg.max_bytes} bytes): capture stopped")
                log.warning("%s", self.full)
                self.job = None
                return
            self.dataset_bytes += size
            folder, model_folder = item.root / item.label, item.root / ".model" / item.label
        else:
            folder, model_folder = item.root, item.root / ".model"
        folder.mkdir(parents=True, exist_ok=True)
        model_folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.jpg").write_bytes(full.tobytes())
        (folder / f"{name}.json").write_bytes(side)
        (model_folder / f"{name}.png").write_bytes(small.tobytes())
        self.saved["capture" if item.root == self.dataset else "doubtful"] += 1
        if item.root == self.doubtful:
            self._trim_ring()

    def _low_on_space(self, size: int) -> str:
        """Why writing `size` more bytes would eat into capture.min_free_bytes ('' = room)."""
        root = self.dataset.parent
        while not root.exists() and root != root.parent:
            root = root.parent  # made at the first save: its disk is its parent's
        try:
            free = shutil.disk_usage(root).free
        except OSError as exc:
            return f"free space on {root} cannot be read ({exc})"
        if free - size >= self.cfg.min_free_bytes:
            return ""
        return (f"only {free >> 20} MiB free on {root}: frames are kept only while "
                f"capture.min_free_bytes ({self.cfg.min_free_bytes >> 20} MiB) stays free; "
                "free disk space or collect the frames (make collect)")

    def _no_room(self, item: Save, why: str) -> None:
        """Stop a capture, or skip a doubtful frame, before the disk's reserve is touched."""
        self.skipped += 1
        if item.root == self.dataset:
            self.job = None
            why = f"{why}: capture stopped"
        if self.full != why:
            log.warning("%s", why)
        self.full = why

    def _trim_ring(self) -> None:
        """Oldest doubtful frames go until the ring is within its bounds."""
        jpgs = sorted(self.doubtful.glob("*.jpg"))  # names sort by time
        sizes = {p: sum(f.stat().st_size for f in sidecars(p, self.doubtful) if f.exists())
                 for p in jpgs}
        total = sum(sizes.values())
        while jpgs and (len(jpgs) > self.cfg.doubtful_max_files
                        or total > self.cfg.doubtful_max_bytes):
            old = jpgs.pop(0)
            total -= sizes[old]
            for f in sidecars(old, self.doubtful):
                f.unlink(missing_ok=True)

    def close(self) -> None:
        try:
            self.queue.put(None, timeout=2)
        except queue.Full:
            return
        self.writer.join(5)


def sidecars(jpg: Path, root: Path) -> tuple[Path, Path, Path]:
    """A saved frame's files: the JPEG, its JSON and the model's view under <root>/.model/
    (outside the class folders, which the trainer reads recursively)."""
    rel = jpg.parent.relative_to(root)
    return (jpg, jpg.with_suffix(".json"), root / ".model" / rel / f"{jpg.stem}.png")
