"""`make keys`: the Ed25519 key pair that signs pull updates. The private key stays on the
workstation (mode 600); the public key goes to each device (install-device
UPDATE_PUBLIC_KEY=keys/update.pub). Never overwrites: a new key would lock every device out
until it is reinstalled."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("host_training.fleet.keys")


def make_keys(folder: Path, name: str = "update") -> tuple[Path, Path]:
    """Write folder/<name>.pem (private, 600) and folder/<name>.pub (public PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    for p in (private, public):
        if p.exists() or p.is_symlink():
            raise FileExistsError(f"{p} exists: keys are never overwritten (devices trust the "
                                  "old one). Move it away first if you really mean to")
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="coral-keys", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("keys"), help="folder (default: keys)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        private, public = make_keys(a.out)
    except (FileExistsError, OSError) as exc:
        log.error("%s", exc)
        return 1
    log.info("wrote %s (private, mode 600: keep it on this machine) and %s", private, public)
    log.info("on each device: sudo make install-device UPDATE_PUBLIC_KEY=%s", public)
    log.info("then: make rollout ... (signs with %s)", private)
    return 0


if __name__ == "__main__":
    sys.exit(main())
