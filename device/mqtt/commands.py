"""Commands a controller sends on <prefix>/<device_id>/cmd/<name>: a table of handlers over a
small Controls interface, run on their own thread (never on paho's).

Each gets a reply on cmd/<name>/reply: {"ok": true, ...} or {"ok": false, "error": ...}.
A payload is bounded in size and nesting *before* it is parsed (100,000 '[' would
otherwise raise RecursionError inside the JSON parser), and a retained command is
ignored: a stale `pause` left on the broker must not pause the device at every start.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

MAX_PAYLOAD = 16 * 1024
MAX_DEPTH = 8
NOT_AN_OBJECT = "payload is not a JSON object: send {} or {\"key\": value, ...}"
Reply = dict[str, Any]


class PayloadError(ValueError):
    """A command payload that is not a small JSON object."""


class Controls(Protocol):
    """What commands may do to the daemon; nothing else of it is visible here."""

    def publish_status(self) -> None: ...

    def set_paused(self, paused: bool) -> None: ...

    def reset_counts(self) -> Reply: ...

    def request_reload(self, nonce: str) -> None: ...

    def snapshot(self, quality: int) -> Reply: ...

    def update(self, args: dict[str, Any]) -> Reply | None: ...

    def capture(self, label: str, frames: int, every: float) -> Reply: ...


def nesting_depth(data: bytes) -> int:
    """The deepest [ / { nesting in a JSON text, strings skipped: checked before parsing."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in data:
        if in_string:
            if escaped:
                escaped = False
            elif ch == 0x5C:  # backslash
                escaped = True
            elif ch == 0x22:  # quote
                in_string = False
        elif ch == 0x22:
            in_string = True
        elif ch in (0x5B, 0x7B):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return deepest  # no need to read the rest
        elif ch in (0x5D, 0x7D):
            depth -= 1
    return deepest


def parse_payload(data: bytes) -> dict[str, Any]:
    """A command's arguments: empty payload = {}; else a small JSON object."""
    if len(data) > MAX_PAYLOAD:
        raise PayloadError(f"payload of {len(data)} bytes is too large (at most {MAX_PAYLOAD})")
    if not data.strip():
        return {}
    if nesting_depth(data) > MAX_DEPTH:
        raise PayloadError(f"payload nests deeper than {MAX_DEPTH} levels")
    try:
        args = json.loads(data)
    except (ValueError, RecursionError):
        raise PayloadError(NOT_AN_OBJECT) from None
    if not isinstance(args, dict):
        raise PayloadError(NOT_AN_OBJECT)
    return args


def _int_arg(args: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = args.get(key, default)
    # bool is an int in Python: `{"quality": true}` must not pass as 1
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PayloadError(f"{key} must be an integer from {lo} to {hi}")
    return value


def _status(c: Controls, args: dict[str, Any]) -> Reply | None:
    c.publish_status()
    return {"ok": True}


def _pause(c: Controls, args: dict[str, Any]) -> Reply | None:
    c.set_paused(True)
    return {"ok": True, "state": "paused"}


def _resume(c: Controls, args: dict[str, Any]) -> Reply | None:
    c.set_paused(False)
    return {"ok": True, "state": "running"}


def _paused(c: Controls, args: dict[str, Any]) -> Reply | None:
    """Home Assistant's "Paused" switch: one topic for both states."""
    paused = args.get("paused")
    if not isinstance(paused, bool):
        raise PayloadError('paused needs {"paused": true} or {"paused": false}')
    return (_pause if paused else _resume)(c, args)


def _reset_counts(c: Controls, args: dict[str, Any]) -> Reply | None:
    return c.reset_counts()


def _reload(c: Controls, args: dict[str, Any]) -> Reply | None:
    nonce = args.get("nonce", "")
    if not isinstance(nonce, str) or len(nonce) > 64:
        raise PayloadError("nonce must be a string of at most 64 characters")
    c.request_reload(nonce)
    return None  # the frame loop replies once the model is swapped (or refused)


def _snapshot(c: Controls, args: dict[str, Any]) -> Reply | None:
    return c.snapshot(_int_arg(args, "quality", 85, 1, 100))


def _update(c: Controls, args: dict[str, Any]) -> Reply | None:
    # validated here, run on the updater's own thread: progress and the result follow on
    # cmd/update/reply (device/daemon/update.py)
    return c.update(args)


def capture_args(args: dict[str, Any]) -> tuple[str, int, float]:
    """cmd/capture's arguments: a class folder name, 1..10000 frames, 0..3600 s apart."""
    label = args.get("label", "_unlabelled")
    if not isinstance(label, str) or not re.match(r"^(?!\.)[A-Za-z0-9_.-]{1,64}$", label):
        raise PayloadError("label must be 1-64 letters, digits, '-', '_' or '.' (not "
                           "starting with '.'), e.g. \"10000_vnd\" or \"_unlabelled\"")
    frames = _int_arg(args, "frames", 1, 1, 10_000)
    every = args.get("every", 0.0)
    if isinstance(every, bool) or not isinstance(every, int | float) or not 0 <= every <= 3600:
        raise PayloadError("every must be a number of seconds from 0 to 3600")
    return label, frames, float(every)


def _capture(c: Controls, args: dict[str, Any]) -> Reply | None:
    return c.capture(*capture_args(args))


HANDLERS: dict[str, Callable[[Controls, dict[str, Any]], Reply | None]] = {
    "status": _status, "pause": _pause, "resume": _resume, "paused": _paused,
    "reset_counts": _reset_counts,
    "reload": _reload, "snapshot": _snapshot, "update": _update, "capture": _capture,
}


@dataclass(frozen=True)
class Command:
    name: str
    payload: bytes


class CommandRunner(threading.Thread):
    """Runs commands in arrival order off paho's thread; a bounded queue drops floods.

    A dropped command gets no reply, so each one is counted (`commands_dropped` in status)
    and a burst is logged twice, not once per command: when dropping starts and, with its
    total, when the queue has drained again.
    """

    def __init__(self, controls: Controls, reply: Callable[[str, Reply], None],
                 on_error: Callable[[str], None] | None = None, size: int = 64):
        super().__init__(name="commands", daemon=True)
        self.controls = controls
        self.reply = reply
        self.on_error = on_error
        self.queue: queue.Queue[Command | None] = queue.Queue(size)
        self.dropped = 0
        self._burst_start = -1  # `dropped` when the current burst began (-1: none)

    def submit(self, name: str, payload: bytes) -> None:
        """Called on paho's thread: never blocks, never raises."""
        try:
            self.queue.put_nowait(Command(name, payload))
        except queue.Full:
            if self._burst_start < 0:
                self._burst_start = self.dropped
                log.warning("command queue full (%d waiting): dropping commands (no reply) "
                            "until it drains; send fewer commands at once",
                            self.queue.maxsize)
            self.dropped += 1

    def _burst_over(self) -> None:
        """Log a finished burst of drops once, with its size (called with the queue empty)."""
        start = self._burst_start
        if start >= 0:
            self._burst_start = -1
            log.warning("command queue drained: %d command(s) were dropped in that burst "
                        "(%d since start)", self.dropped - start, self.dropped)

    def run(self) -> None:
        while (cmd := self.queue.get()) is not None:
            try:
                reply = self.handle(cmd)
            except Exception as exc:  # a command must never take the daemon down
                log.exception("command %s failed", cmd.name)
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                if self.on_error is not None:
                    self.on_error(f"command {cmd.name} failed: {exc}")
            if reply is not None:
                self.reply(cmd.name, reply)
            if self.queue.empty():
                self._burst_over()

    def handle(self, cmd: Command) -> Reply | None:
        handler = HANDLERS.get(cmd.name)
        if handler is None:
            return {"ok": False, "error": f"unknown command {cmd.name[:64]!r}: one of "
                    + ", ".join(HANDLERS)}
        try:
            return handler(self.controls, parse_payload(cmd.payload))
        except PayloadError as exc:
            return {"ok": False, "error": str(exc)}

    def stop(self) -> None:
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            self.queue.get_nowait()
            self.queue.put_nowait(None)
        self.join(5)
