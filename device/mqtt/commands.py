"""Commands a controller sends on <prefix>/<device_id>/cmd/<name>.

Each gets a reply on cmd/<name>/reply: {"ok": true, ...} or {"ok": false, "error": ...}.
They run on paho's network thread, so anything that touches the model (reload) is handed
to the frame loop, which swaps it between frames and sends the reply itself.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import cv2

if TYPE_CHECKING:
    from device.daemon.lifecycle import Daemon

log = logging.getLogger(__name__)

COMMANDS = ("reload", "reset_counts", "pause", "resume", "snapshot", "status")


def handle(daemon: Daemon, name: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """Run one command; None means the frame loop will reply later."""
    if name == "status":
        daemon.publish_status()
        return {"ok": True}
    if name == "pause":
        daemon.paused.set()
        daemon.publish_status()
        return {"ok": True, "state": "paused"}
    if name == "resume":
        daemon.paused.clear()
        daemon.publish_status()
        return {"ok": True, "state": "running"}
    if name == "reset_counts":
        daemon.outbox.reset_counts()
        daemon.publish_counts()
        return {"ok": True, "counts": {}}
    if name == "reload":
        daemon.request_reload(reply=True)
        return None
    if name == "snapshot":
        return snapshot(daemon, args)
    return {"ok": False, "error": f"unknown command {name!r}: one of {', '.join(COMMANDS)}"}


def snapshot(daemon: Daemon, args: dict[str, Any]) -> dict[str, Any]:
    """The last frame as JPEG on <base>/snapshot, to see what the camera saw on a misread."""
    quality = args.get("quality", 85)
    if not isinstance(quality, int) or not 1 <= quality <= 100:
        return {"ok": False, "error": "quality must be an integer from 1 to 100"}
    frame = daemon.last_frame
    if frame is None:
        return {"ok": False, "error": "no frame captured yet"}
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return {"ok": False, "error": "the frame could not be encoded"}
    data = jpeg.tobytes()
    daemon.publisher.publish(daemon.topics["snapshot"], data, qos=0)
    return {"ok": True, "seq": frame.seq, "ts": round(frame.ts, 3), "bytes": len(data),
            "topic": daemon.topics["snapshot"]}
