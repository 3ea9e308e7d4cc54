"""The web page's password: stored only as a scrypt hash (standard library), checked on
every request when set. `python -m device.web.auth` makes the hash for web.password_hash.

A browser sends it as HTTP Basic (any user name), a script as `Authorization: Bearer
<token>`: both are checked against the same hash. scrypt is slow on purpose (~50 ms on a
Pi 4), so a credential that passed once is remembered by its SHA-256 for this process:
the live page's polling then costs a dictionary lookup, not a key derivation.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

N, R, P = 1 << 14, 8, 1  # ~16 MiB of memory per check: fine on a Pi 4


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$<salt hex>$<hash hex>` for web.password_hash."""
    if not password:
        raise ValueError("an empty password protects nothing")
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return f"scrypt${N}${R}${P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                             p=int(p), dklen=len(digest) // 2, maxmem=256 << 20)
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def credential(header: str | None) -> str | None:
    """The password or token in an Authorization header (Basic or Bearer), else None."""
    if not header:
        return None
    kind, _, value = header.strip().partition(" ")
    if kind.lower() == "bearer":
        return value.strip() or None
    if kind.lower() == "basic":
        try:
            _, _, password = base64.b64decode(value.strip(), validate=True).decode(
                "utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return password or None
    return None


class Authorizer:
    """Checks requests against the stored hash; no hash = everything allowed (loopback).

    A wrong password costs a scrypt (16 MiB, tens of ms): 48 at once took the daemon from
    113 to 836 MB. So at most `max_checks` run at once (others are told 503, retry), and a
    client past `free_failures` wrong guesses waits 1, 2, 4 ... up to `max_backoff` s (429)
    before its next guess is even looked at. A credential that passed before is a lookup
    and never waits: the owner's open page keeps working while someone guesses.
    """

    def __init__(self, stored: str, max_checks: int = 2, free_failures: int = 5,
                 max_backoff: float = 300.0):
        self.stored = stored
        self._good: set[bytes] = set()
        self._lock = threading.Lock()
        self._checks = threading.BoundedSemaphore(max_checks)
        # scrypt runs on these threads only: glibc keeps a freed 16 MiB block in the arena
        # of the thread that used it, so checks spread over every request thread would
        # leave 16 MiB behind in each of them
        self._checkers = ThreadPoolExecutor(max_checks, thread_name_prefix="web-auth")
        self.free_failures, self.max_backoff = free_failures, max_backoff
        self._clients: dict[str, list[float]] = {}  # client -> [failures, blocked until]

    @property
    def required(self) -> bool:
        return bool(self.stored)

    def allows(self, header: str | None, client: str = "") -> bool:
        return self.check(header, client)[0] == 200

    def check(self, header: str | None, client: str) -> tuple[int, float]:
        """(200, 0) allowed, (401, 0) no or wrong credential, (429 or 503, seconds to wait)."""
        if not self.stored:
            return 200, 0.0
        secret = credential(header)
        if secret is None:
            return 401, 0.0
        key = hashlib.sha256(secret.encode()).digest()
        with self._lock:
            if key in self._good:
                return 200, 0.0
        wait = self._admit(client)
        if wait:
            return 429, wait
        if not self._checks.acquire(timeout=1.0):
            return 503, 1.0
        try:
            ok = self._checkers.submit(verify_password, secret, self.stored).result()
        finally:
            self._checks.release()
        if not ok:
            return 401, 0.0
        with self._lock:
            self._clients.pop(client, None)
            if len(self._good) < 64:
                self._good.add(key)
        return 200, 0.0

    def _admit(self, client: str) -> float:
        """Seconds this client must still wait; else its guess is counted (before the
        check, so concurrent guesses cannot all slip in under the allowance)."""
        now = time.monotonic()
        with self._lock:
            entry = self._clients.get(client)
            if entry is not None and now < entry[1]:
                return entry[1] - now
            if entry is None:
                if len(self._clients) >= 4096:  # bounded: forget the oldest
                    self._clients.pop(next(iter(self._clients)))
                entry = self._clients[client] = [0, 0.0]
            entry[0] += 1
            if entry[0] >= self.free_failures:
                entry[1] = now + min(self.max_backoff, 2.0 ** (entry[0] - self.free_failures))
            return 0.0


def main() -> int:
    """Read a password (twice, or once from a pipe) and print its hash."""
    if sys.stdin.isatty():
        first = getpass.getpass("web page password: ")
        if first != getpass.getpass("again: "):
            print("the two entries differ", file=sys.stderr)
            return 1
    else:
        first = sys.stdin.readline().rstrip("\n")
    try:
        print(hash_password(first))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
