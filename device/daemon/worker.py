"""The inference worker: the interpreter and the Edge TPU delegate live in a child process.

A native crash (a libedgetpu built for another TensorFlow segfaults in the delegate) or a
hang (a wedged USB accelerator) then kills or stalls only the worker; the daemon, its MQTT
session, outbox and counts carry on, and the supervisor starts a new worker (Frigate's
detector process, restarted by its watchdog). Frames travel through shared memory (the
capture thread resizes straight into a slot), requests and results over a pipe: a few
dozen bytes each way plus the tiny output tensor.

Loading, the golden self-test and the swap on reload all happen in the worker, so a bundle
that crashes the runtime is refused like any other bad bundle.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import pickle
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from device.config import ModelConfig
from device.daemon.wire import INFER, INFER_STRUCT, OUT, decode_out, encode_out
from device.errors import BackendError, CoralError, ModelError
from device.inference import Postprocess
from device.money import denominations
from device.openset import OperatingPoint, fallback_point, operating_point

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadRequest:
    """What to load; the model part of the config, nothing else crosses."""

    path: str
    labels: str = ""
    backend: str = "auto"
    allow_cpu_fallback: bool = False
    device: str = ""
    num_threads: int = 2
    top_k: int = 3
    min_score: float = 0.0

    @classmethod
    def from_config(cls, m: ModelConfig) -> LoadRequest:
        return cls(m.path, m.labels, m.backend, m.allow_cpu_fallback, m.device,
                   m.num_threads, m.top_k, m.min_score)


@dataclass(frozen=True)
class ModelSpec:
    """A loaded model as the daemon sees it: enough to prepare frames and rank outputs."""

    name: str
    version: str
    sha256: str
    labels: tuple[str, ...]
    backend: str
    runtime: str
    width: int
    height: int
    resize: str
    postprocess: Postprocess
    manifest_decision: dict[str, Any] | None = None
    point: OperatingPoint | None = None  # the bundle's reject rule (or the fallback)
    denominations: dict[str, tuple[float, str]] = field(default_factory=dict)  # value, ISO

    def info(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


class WorkerDied(CoralError):
    """The worker process crashed or stopped answering within its deadline."""

    exit_code = 4


class RuntimeCrash(BackendError):
    """The runtime took the worker down while loading a model (a segfault in a delegate)."""


# -- the child process ----------------------------------------------------------------------
def _load(req: LoadRequest):
    from device.bundle import load_bundle
    from device.inference import create_classifier
    from device.selftest import self_test

    bundle = load_bundle(req.path, req.labels or None)
    clf = create_classifier(bundle, req.backend, allow_cpu_fallback=req.allow_cpu_fallback,
                            device=req.device, num_threads=req.num_threads, top_k=req.top_k,
                            min_score=req.min_score)
    try:
        self_test(clf, clf.bundle)
    except CoralError:
        clf.close()
        raise
    b = clf.bundle
    manifest = b.manifest if isinstance(b.manifest, dict) else {}
    try:
        point = operating_point(manifest) or fallback_point(b.labels)
        worth = {k: (d.value, d.currency) for k, d in denominations(manifest, b.labels).items()}
    except ValueError as exc:
        clf.close()
        raise ModelError(f"{b.root}: {exc}") from None
    if manifest and operating_point(manifest) is None:
        log.warning("bundle %s has no decision section: no reject path for things it was "
                    "not trained on (retrain with --negatives)", b.name)
    spec = ModelSpec(b.name, b.version, b.sha256, b.labels, clf.backend, clf.runtime,
                     clf.width, clf.height, clf.resize_policy, clf.postprocess,
                     manifest.get("decision"), point, worth)
    return clf, spec


def serve(conn: Connection, log_level: int = logging.INFO) -> None:
    """The worker's main loop: load, attach shared memory, infer; until EOF or 'stop'."""
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s[worker]: %(message)s")
    # The daemon decides when we stop (a "stop" message, EOF, or SIGKILL): Ctrl-C and a
    # SIGTERM sent to the whole process group (systemd's stop, a terminal) would kill us
    # first and the daemon would log a false "inference worker is gone" and restart us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    clf = shm = slots = None
    swap = False
    try:
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                return
            if data[:1] == INFER:  # the hot path: a few bytes each way, no pickle
                ticket, slot = INFER_STRUCT.unpack_from(data, 1)
                try:
                    image = slots[slot][..., ::-1] if swap else slots[slot]
                    inf = clf.infer(image, prepared=True)
                except (RuntimeError, ValueError, TypeError) as exc:
                    conn.send(("fail", ticket, f"inference failed: {exc}"))
                    continue
                conn.send_bytes(encode_out(ticket, inf))
                continue
            msg = pickle.loads(data)
            kind = msg[0]
            if kind == "load":
                try:
                    new, spec = _load(msg[1])
                except CoralError as exc:
                    conn.send(("error", exc.exit_code, str(exc)))
                    continue
                if clf is not None:
                    clf.close()
                clf, swap = new, new.swap_rb
                conn.send(("loaded", spec))
            elif kind == "attach":
                _, name, shape = msg
                if shm is not None:
                    slots = None
                    shm.close()
                shm = SharedMemory(name=name)
                slots = np.ndarray(shape, np.uint8, buffer=shm.buf)
                conn.send(("attached", name))
            elif kind == "stop":
                return
    finally:
        slots = None
        if shm is not None:
            shm.close()
        if clf is not None:
            clf.close()


# -- the daemon's side ----------------------------------------------------------------------
class WorkerProcess:
    """Starts the worker, talks to it with deadlines, and kills it when it is stuck.

    Not thread-safe: one thread (the daemon's frame loop) owns it.
    """

    def __init__(self, load_timeout: float = 60.0):
        self.ctx = multiprocessing.get_context("spawn")  # no fork: the daemon has threads
        self.load_timeout = load_timeout
        self.proc: multiprocessing.process.BaseProcess | None = None
        self.conn: Connection | None = None
        self.restarts = -1  # the first start is not a restart

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def start(self) -> None:
        self.kill()
        parent, child = self.ctx.Pipe(duplex=True)
        self.proc = self.ctx.Process(target=serve, args=(child, logging.getLogger().level),
                                     name="inference-worker", daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        self.restarts += 1
        log.info("inference worker started (pid %d)", self.proc.pid)

    def kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()  # works on a SIGSTOPped process too
            self.proc.join(5)
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None

    def stop(self, timeout: float = 3.0) -> None:
        if self.alive and self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.send(("stop",))
            self.proc.join(timeout)
        self.kill()

    def _death(self) -> str:
        code = self.proc.exitcode if self.proc is not None else None
        if code is not None and code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with code {code}" if code is not None else "stopped answering"

    def send(self, msg: tuple) -> None:
        try:
            self.conn.send(msg)
        except (OSError, AttributeError) as exc:
            raise WorkerDied(f"inference worker is gone ({exc})") from None

    def infer(self, slot: int, ticket: int) -> None:
        """Ask for one frame (the hot path's packed request)."""
        try:
            self.conn.send_bytes(INFER + INFER_STRUCT.pack(ticket, slot))
        except (OSError, AttributeError) as exc:
            raise WorkerDied(f"inference worker is gone ({exc})") from None

    def recv(self, timeout: float) -> tuple | None:
        """The next reply, None after timeout; WorkerDied when the process ended."""
        try:
            if not self.conn.poll(timeout):
                if not self.alive:
                    raise WorkerDied(f"inference worker {self._death()}")
                return None
            data = self.conn.recv_bytes()
            return decode_out(data) if data[:1] == OUT else pickle.loads(data)
        except (EOFError, OSError, AttributeError):
            if self.proc is not None:
                self.proc.join(1)
            raise WorkerDied(f"inference worker {self._death()}") from None

    def call(self, msg: tuple, expect: str, timeout: float) -> tuple:
        """A control request (load, attach) answered in order; frames must be drained."""
        self.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            reply = self.recv(max(0.0, deadline - time.monotonic()))
            if reply is None:
                self.kill()
                raise WorkerDied(f"inference worker did not answer {msg[0]!r} within "
                                 f"{timeout:.0f} s; killed")
            if reply[0] in (expect, "error"):
                return reply
            # a late frame result from before: the caller dropped it already

    def load(self, req: LoadRequest) -> ModelSpec:
        """Load, self-test and swap in a model; ModelError/BackendError when refused."""
        if not self.alive:
            self.start()
        try:
            reply = self.call(("load", req), "loaded", self.load_timeout)
        except WorkerDied as exc:
            raise RuntimeCrash(
                f"the runtime crashed while loading {req.path} on {req.backend} ({exc}): "
                "on a Pi this is usually a libedgetpu built for another TensorFlow version "
                "than the interpreter; run `coral-classifier doctor`") from None
        if reply[0] == "error":
            _, code, message = reply
            raise (BackendError if code == BackendError.exit_code else ModelError)(message)
        return reply[1]

    def attach(self, name: str, shape: tuple[int, ...]) -> None:
        self.call(("attach", name, shape), "attached", 10.0)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None
