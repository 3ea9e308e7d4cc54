"""The web page's connections: a capped number open, request headers read by one selector
thread, a deadline on the whole request, and a fixed pool of worker threads that only see
requests whose headers have fully arrived.

Why not ThreadingHTTPServer: one thread per connection and a per-read timeout let 1,025
slow clients take every file descriptor of the daemon (its MQTT session with them), and a
client sending a byte every few seconds was never cut off. Here, at the cap, the oldest
connection still sending its head is closed to make room (or, if every one is at work,
the new one is answered 503); a slow or silent client costs a buffer in the selector, not
a thread; and the deadline counts from the first byte, however the bytes trickle.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024  # request line and headers; http.server's own line limit is 64 KiB
GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Retry-After: 2\r\nConnection: close\r\nContent-Length: 56\r\n\r\n"
        b'{"ok": false, "error": "too many connections, retry"}   ')


class Conn:
    """One client connection: its socket, the head bytes read so far, its deadline."""

    __slots__ = ("closed", "deadline", "head", "peer", "sock")

    def __init__(self, sock: socket.socket, peer: tuple, deadline: float):
        self.sock, self.peer, self.deadline, self.head = sock, peer, deadline, b""
        self.closed = False

    def reader(self) -> io.BufferedReader:
        """The request as a file: the bytes the selector already read, then the socket."""
        return io.BufferedReader(_Prefixed(self.head, self.sock))


class _Prefixed(io.RawIOBase):
    def __init__(self, head: bytes, sock: socket.socket):
        self.head, self.sock = memoryview(head), sock

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n], self.head = self.head[:n], self.head[n:]
            return n
        return self.sock.recv_into(b)


class ConnectionPool:
    """Listens on (address, port); hands each complete request head to `handle(conn)` on
    one of `workers` threads; the socket is closed when `handle` returns."""

    def __init__(self, address: str, port: int, handle: Callable[[Conn], None], *,
                 max_connections: int, workers: int, header_timeout: float,
                 request_timeout: float, io_timeout: float = 10.0):
        self.handle, self.cap, self.nworkers = handle, max_connections, workers
        self.header_timeout, self.request_timeout = header_timeout, request_timeout
        self.io_timeout = min(io_timeout, request_timeout)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((address, port))
            self.sock.listen(min(64, max_connections))
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ, None)
        self.lock = threading.Lock()
        self.open = 0  # connections accepted and not yet closed (reading, queued, working)
        self.reading: dict[Conn, None] = {}  # heads arriving, oldest first (selector's own)
        self.working: set[Conn] = set()  # in a worker, deadline checked by the selector
        self.jobs: queue.SimpleQueue[Conn | None] = queue.SimpleQueue()
        self.noted: dict[str, int] = {}  # connections closed by the limits, not yet logged
        self.noted_at = 0.0
        self.stopping = threading.Event()
        self.paused_until = 0.0
        self.thread = threading.Thread(target=self._loop, name="web", daemon=True)
        self.workers = [threading.Thread(target=self._work, name=f"web-{i}", daemon=True)
                        for i in range(workers)]

    def start(self) -> None:
        self.thread.start()
        for t in self.workers:
            t.start()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        for _ in self.workers:
            self.jobs.put(None)
        with self.lock:
            for c in self.working:
                _shut(c.sock)
        deadline = time.monotonic() + 3
        for t in self.workers:
            t.join(max(0.0, deadline - time.monotonic()))
        self.sel.close()
        self.sock.close()

    def unlimit(self, conn: Conn) -> None:
        """No whole-request deadline for this one (the live stream; writes still time out)."""
        with self.lock:
            conn.deadline = float("inf")

    # -- the selector thread -----------------------------------------------------------------
    def _loop(self) -> None:
        while not self.stopping.is_set():
            for key, _ in self.sel.select(0.25):
                if key.data is None:
                    self._accept()
                else:
                    self._read(key.data)
            self._sweep(time.monotonic())
        for c in list(self.reading):
            self._drop(c)

    def _accept(self) -> None:
        for _ in range(64):  # a burst, then back to the others
            try:
                sock, peer = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # not spinning on a listener that stays readable: retry in a second
                    log.warning("web page: cannot accept connections (%s); retrying in 1 s",
                                exc.strerror)
                    self.sel.unregister(self.sock)
                    self.paused_until = time.monotonic() + 1.0
                return
            if self.open >= self.cap and self.reading:
                # full: the oldest connection still sending its head makes room (a flood
                # of slow clients then cannot keep out one that sends its request at once)
                self._note("closed to make room (web.max_connections)")
                self._drop(next(iter(self.reading)), b"503 Service Unavailable")
            with self.lock:
                full = self.open >= self.cap
                if not full:
                    self.open += 1
            if full:
                self._note("refused: all at work (web.max_connections)")
                try:
                    sock.setblocking(False)
                    sock.send(BUSY)
                except OSError:
                    pass
                sock.close()
                continue
            sock.setblocking(False)
            c = Conn(sock, peer, time.monotonic() + self.header_timeout)
            self.reading[c] = None
            self.sel.register(sock, selectors.EVENT_READ, c)

    def _read(self, c: Conn) -> None:
        if c.closed:  # dropped earlier in this round of events (to make room)
            return
        try:
            data = c.sock.recv(8192)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(c)
            return
        c.head += data
        if b"\r\n\r\n" not in c.head and b"\n\n" not in c.head:
            if len(c.head) > MAX_HEAD:
                self._drop(c, b"431 Request Header Fields Too Large")
            return
        self.sel.unregister(c.sock)
        del self.reading[c]
        c.sock.setblocking(True)
        c.sock.settimeout(self.io_timeout)
        with self.lock:
            c.deadline = time.monotonic() + self.request_timeout
            self.working.add(c)
        self.jobs.put(c)

    def _sweep(self, now: float) -> None:
        if self.paused_until and now >= self.paused_until:
            self.paused_until = 0.0
            self.sel.register(self.sock, selectors.EVENT_READ, None)
        for c in [c for c in self.reading if c.deadline < now]:
            self._note("without a complete request in time (web.header_timeout)")
            self._drop(c, b"408 Request Timeout")
        self._log_noted(now)
        with self.lock:
            for c in [c for c in self.working if c.deadline < now]:
                c.deadline = float("inf")  # cut once
                self._note("cut off mid-request (web.request_timeout)")
                _shut(c.sock)  # the worker's blocked read or write returns at once

    def _note(self, why: str) -> None:
        """Count a connection the limits closed; `_sweep` logs the counts every 10 s at
        most, so a flood of slow clients does not flood the journal as well."""
        self.noted[why] = self.noted.get(why, 0) + 1

    def _log_noted(self, now: float) -> None:
        if self.noted and now - self.noted_at >= 10:
            log.warning("web page connections closed by its limits: %s", ", ".join(
                f"{n} {why}" for why, n in self.noted.items()))
            self.noted, self.noted_at = {}, now

    def _drop(self, c: Conn, status: bytes = b"") -> None:
        self.reading.pop(c, None)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(c.sock)
        if status:
            with contextlib.suppress(OSError):
                c.sock.send(b"HTTP/1.1 " + status + b"\r\nConnection: close\r\n"
                            b"Content-Length: 0\r\n\r\n")
        self._close(c)

    def _close(self, c: Conn) -> None:
        with self.lock:  # closed under the lock: `_sweep` never shuts a reused descriptor
            c.sock.close()
            if c.closed:
                return
            c.closed = True
            self.open -= 1
            self.working.discard(c)

    # -- the workers -------------------------------------------------------------------------
    def _work(self) -> None:
        while (c := self.jobs.get()) is not None:
            try:
                self.handle(c)
            except GONE as exc:
                log.info("web page: %s went away mid-request (%s)", c.peer[0],
                         type(exc).__name__)
            except Exception:
                log.exception("web page: a request from %s failed", c.peer[0])
            finally:
                _finish(c.sock)
                self._close(c)


def _finish(sock: socket.socket) -> None:
    """FIN after the reply, and the unread rest of a refused body taken out of the way: a
    close with unread bytes sends a reset, which can destroy the reply before it is read."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.setblocking(False)
        for _ in range(16):
            if not sock.recv(65536):
                break
    except OSError:
        pass


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
