"""The web server: the standard library's request handler on device.web.pool (a connection
cap, heads read by one selector thread, fixed workers, a whole-request deadline).

Why not aiohttp or Starlette: the page has one or two viewers on a LAN, every request is
short except the MJPEG stream (a worker sleeping between frames, web.max_streams at most),
and the Pi installs nothing more. It is bound to 127.0.0.1 unless configured otherwise;
off loopback every request needs the password (validation insists on web.password_hash).

Guards: a loopback server answers only Host names that are loopback (DNS rebinding); the
password is decided right after the headers, before any body is read; state-changing
requests need an `X-Coral-Web: 1` header, which a cross-site form or image cannot send
(CSRF); bodies are bounded and read fully before any work; one upload at a time.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any

from device.config.web import WebConfig, is_loopback
from device.web import stream
from device.web.auth import Authorizer
from device.web.frames import FrameStore
from device.web.live import LiveHub
from device.web.pool import Conn, ConnectionPool
from device.web.upload import UploadError, Uploads

log = logging.getLogger(__name__)

PAGES = {"/": "live.html", "/upload": "upload.html", "/label": "label.html"}
STATIC = {"app.css": "text/css", "app.js": "text/javascript"}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
MAX_JSON = 64 * 1024


@dataclass
class Backend:
    """What the pages read and do; the daemon provides each piece."""

    hub: LiveHub
    store: FrameStore
    uploads: Uploads
    status: Callable[[], dict[str, Any]]
    events: Callable[[], dict[str, Any]]
    labels: Callable[[], list[str]]
    capture: Callable[[str, int, float], dict[str, Any]]


def _asset(name: str) -> bytes:
    return resources.files("device.web").joinpath("static", name).read_bytes()


class Handler(BaseHTTPRequestHandler):
    server: WebServer
    protocol_version = "HTTP/1.1"
    timeout = None  # the pool sets the socket's timeout and the request's deadline

    def __init__(self, conn: Conn, server: WebServer):
        self.conn = conn
        super().__init__(conn.sock, conn.peer, server)

    def setup(self) -> None:
        super().setup()
        self.rfile = self.conn.reader()

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()  # one request per connection: an idle one holds nothing

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)

    # -- plumbing ------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Connection", "close")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data, ensure_ascii=False).encode(), "application/json")

    def _error(self, status: int, message: str, retry: float = 0) -> None:
        body = json.dumps({"ok": False, "error": message}, ensure_ascii=False).encode()
        extra = {"Retry-After": str(math.ceil(retry))} if retry else None
        self._send(status, body, "application/json", extra)

    def _allowed(self) -> bool:
        """Host and password checks, before anything else is read."""
        host = urllib.parse.urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        if self.server.loopback and host not in LOOPBACK_HOSTS and f"[{host}]" not in \
                LOOPBACK_HOSTS:
            self._error(421, "this page answers only on a loopback host name")
            return False
        status, wait = self.server.auth.check(self.headers.get("Authorization"),
                                              self.client_address[0])
        if status == 401:
            self._send(401, b'{"ok": false, "error": "password required"}',
                       "application/json",
                       {"WWW-Authenticate": 'Basic realm="coral-classifier", charset="UTF-8"'})
        elif status != 200:
            why = ("too many wrong passwords from this address" if status == 429
                   else "too many password checks at once")
            self._error(status, f"{why}: retry in {math.ceil(wait)} s", wait)
        return status == 200

    def _body(self, limit: int) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(411, "Content-Length required")
            return None
        if length < 0 or length > limit:
            self._error(413, f"body of {length} bytes is too large (at most {limit})")
            return None
        data = self.rfile.read(length)
        if len(data) < length:
            raise ConnectionAbortedError("body cut short")  # gone, or past the deadline
        return data

    # -- GET -------------------------------------------------------------------------------
    def do_GET(self) -> None:
        if not self._allowed():
            return
        url = urllib.parse.urlsplit(self.path)
        path, b = url.path, self.server.backend
        try:
            if path in PAGES:
                self._send(200, _asset(PAGES[path]), "text/html; charset=utf-8")
            elif path.startswith("/static/") and path[8:] in STATIC:
                self._send(200, _asset(path[8:]), STATIC[path[8:]])
            elif path == "/stream.mjpg":
                self._stream()
            elif path == "/api/live":
                self._json(b.hub.summary())
            elif path == "/api/status":
                self._json(b.status())
            elif path == "/api/events":
                self._json(b.events())
            elif path.startswith("/events/") and path.endswith(".jpg"):
                thumb = b.hub.thumbs.get(path[8:-4], b"")
                self._send(200, thumb, "image/jpeg") if thumb else self._error(404, "gone")
            elif path == "/api/frames":
                self._json({"frames": b.store.list(), "labels": b.labels()})
            elif path == "/frame":
                fid = urllib.parse.parse_qs(url.query).get("id", [""])[0]
                self._send(200, b.store.path(fid).read_bytes(), "image/jpeg")
            else:
                self._error(404, f"no page {path[:80]}")
        except (ValueError, FileNotFoundError) as exc:
            self._error(404, str(exc))

    do_HEAD = do_GET

    def _stream(self) -> None:
        """MJPEG: the pipeline's newest frame, drawn, at most stream_fps a second."""
        web = self.server
        if not web.streams.take():
            return self._error(503, "too many live views open (web.max_streams = "
                               f"{web.cfg.max_streams})", 5)
        web.pool.unlimit(self.conn)
        try:
            self.send_response(200)
            for key, value in stream.HEADERS.items():
                self.send_header(key, value)
            self.end_headers()
            self.close_connection = True
            stream.write_frames(self.wfile, web.backend.hub, 1.0 / web.cfg.stream_fps,
                                web.stopping)
        finally:
            web.streams.give()

    # -- POST ------------------------------------------------------------------------------
    def do_POST(self) -> None:
        if not self._allowed():
            return
        if self.headers.get("X-Coral-Web") != "1":
            self._error(403, "send the X-Coral-Web: 1 header (cross-site requests are refused)")
            return
        url = urllib.parse.urlsplit(self.path)
        b = self.server.backend
        if url.path == "/api/classify":
            self._classify(url, b.uploads)
            return
        if url.path not in ("/api/frames", "/api/capture"):
            self._error(404, f"no endpoint {url.path[:80]}")
            return
        raw = self._body(MAX_JSON)
        if raw is None:
            return
        try:
            args = json.loads(raw or b"{}")
            if not isinstance(args, dict):
                raise ValueError("send a JSON object")
            if url.path == "/api/frames":
                self._json(b.store.apply(args.get("action", ""), args.get("ids"),
                                         args.get("label", "")))
            else:
                self._json(b.capture(args.get("label", ""), args.get("frames", 1),
                                     args.get("every", 0.0)))
        except (ValueError, FileNotFoundError) as exc:
            self._error(400, str(exc))

    def _classify(self, url: urllib.parse.SplitResult, uploads: Uploads) -> None:
        """One upload at a time, body and decoding included: a second waits a little, then
        is told to retry (memory stays one photo's worth whatever the clients do)."""
        if not uploads.turn.acquire(timeout=5.0):
            return self._error(503, "another photo is being classified: retry in 2 s", 2)
        try:
            data = self._body(self.server.cfg.max_upload)
            if data is None:
                return
            name = urllib.parse.parse_qs(url.query).get("name", ["upload"])[0][:200]
            try:
                reply = uploads.classify(data, name, self.server.cfg.max_pixels)
            except UploadError as exc:
                self._error(exc.status, str(exc))
                return
        finally:
            uploads.turn.release()
        self._json(reply)


class WebServer:
    """The page's server: the pool's listener is bound here (OSError when it cannot be)."""

    def __init__(self, cfg: WebConfig, backend: Backend):
        self.cfg, self.backend = cfg, backend
        self.auth = Authorizer(cfg.password_hash, cfg.max_password_checks,
                               cfg.login_free_failures, cfg.login_max_backoff)
        self.loopback = is_loopback(cfg.address)
        self.stopping = threading.Event()
        self.streams = stream.StreamSlots(cfg.max_streams)
        self.pool = ConnectionPool(
            cfg.address, cfg.port, lambda conn: Handler(conn, self),
            max_connections=cfg.max_connections, workers=cfg.workers,
            header_timeout=cfg.header_timeout, request_timeout=cfg.request_timeout)
        self.server_address = self.pool.address
        self.thread = self.pool.thread

    @property
    def server_port(self) -> int:
        """The port bound (the configured one, or the one the system chose for port 0)."""
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    def start(self) -> None:
        self.pool.start()
        log.info("web page on %s%s", self.url,
                 " (password required)" if self.auth.required else "")

    def close(self) -> None:
        self.stopping.set()
        with self.backend.hub.cond:
            self.backend.hub.cond.notify_all()
        self.pool.close()
