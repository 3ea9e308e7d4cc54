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
    """Checks requests against the stored hash; no hash = everything allowed (loopback)."""

    def __init__(self, stored: str):
        self.stored = stored
        self._good: set[bytes] = set()
        self._lock = threading.Lock()

    @property
    def required(self) -> bool:
        return bool(self.stored)

    def allows(self, header: str | None) -> bool:
        if not self.stored:
            return True
        secret = credential(header)
        if secret is None:
            return False
        key = hashlib.sha256(secret.encode()).digest()
        with self._lock:
            if key in self._good:
                return True
        if not verify_password(secret, self.stored):
            return False
        with self._lock:
            if len(self._good) < 64:
                self._good.add(key)
        return True


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
