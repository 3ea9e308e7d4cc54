"""check-config's test that the web page and metrics addresses can be listened on here.

Why: both are optional extras, but an address this host does not have, or a port another
program holds (8080 is a common clash), used to pass check-config and then stop the daemon
at start. A bind is tried and released at once; nothing is sent anywhere.
"""

from __future__ import annotations

import errno
import socket
from contextlib import ExitStack


def bind_problems(listeners: list[tuple[str, str, int]]) -> list[str]:
    """One line per (what, address, port) that cannot be bound, each held while the next
    is tried so that two of them on one port are caught too. Port 0 is always free."""
    problems = []
    with ExitStack() as held:
        for what, address, port in listeners:
            sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
            held.callback(sock.close)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
                sock.listen(1)
            except OSError as exc:
                problems.append(f"{what} {address}:{port} cannot be listened on: "
                                f"{_why(exc, address, port, what)}")
    return problems


def _why(exc: OSError, address: str, port: int, what: str) -> str:
    key = what.split(".")[0]
    if exc.errno == errno.EADDRINUSE:
        return (f"port {port} is in use (another program, or a coral-classifier already "
                f"running with this config: stop it first); choose another {key}.port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"{address} is not an address of this host; use one `ip addr` lists, "
                f"127.0.0.1 or 0.0.0.0 in {key}.address")
    if exc.errno == errno.EACCES:
        return f"port {port} needs root (ports below 1024); choose a port above 1023"
    return f"{exc.strerror or exc}; check {key}.address and {key}.port"
