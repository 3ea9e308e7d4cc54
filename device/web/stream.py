"""The live view's MJPEG stream, apart from the server's routing.

Each open view holds a pool worker for as long as it is watched, so their number is capped
(web.max_streams, below web.workers so a worker stays free for everything else); a view
writes the pipeline's newest drawn frame at most web.stream_fps a second, and counts itself
as a watcher, without which the hub wakes nobody.
"""

from __future__ import annotations

import threading
import time
from typing import BinaryIO

from device.web.live import LiveHub

BOUNDARY = "coralframe"
HEADERS = {"Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
           "Cache-Control": "no-store", "Connection": "close"}


class StreamSlots:
    """How many live views are open, at most `limit` at once."""

    def __init__(self, limit: int):
        self.limit = limit
        self.open = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        """One more view, or False when `limit` are open already."""
        with self._lock:
            if self.open >= self.limit:
                return False
            self.open += 1
            return True

    def give(self) -> None:
        with self._lock:
            self.open -= 1


def write_frames(wfile: BinaryIO, hub: LiveHub, gap: float, stopping: threading.Event) -> None:
    """The multipart body, one JPEG part per new frame and at most one per `gap` seconds,
    until the viewer goes away or `stopping` is set."""
    hub.watch(+1)
    seq, last = None, 0.0
    try:
        while not stopping.is_set():
            latest = hub.wait_newer(seq, 1.0)
            if latest is None:
                continue
            jpg = hub.jpeg(latest)
            seq = latest.frame.seq
            wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(jpg)}\r\n\r\n".encode() + jpg + b"\r\n")
            wfile.flush()
            wait = last + gap - time.monotonic()
            if wait > 0:
                stopping.wait(wait)
            last = time.monotonic()
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass  # the viewer went away
    finally:
        hub.watch(-1)
