"""What a pull update may ask for, decided before a byte is fetched: the signed envelope
(url, sha256, size, version, devices or fleet, not_before) checked against
update.public_key, or plain fields where update.allow_unsigned opts out of signing; and
the rule that versions only move forward."""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.config import UpdateConfig
from device.daemon.fetch import UpdateError, source_kind
from device.daemon.store import VERSION
from device.mqtt.commands import PayloadError

SHA256 = re.compile(r"^[0-9a-f]{64}$")
FIELDS = {"url", "sha256", "size", "version", "allow_downgrade"}
SIGNED_ONLY = {"devices", "fleet", "not_before"}
MAX_ENVELOPE = 8192
HOW_TO_SIGN = ("make rollout SIGN_KEY=keys/update.pem (or coral-rollout --sign-key) builds "
               "and signs it")


@dataclass(frozen=True)
class Request:
    """One checked update request; `id` is the caller's id, echoed in every reply."""

    url: str = ""
    sha256: str = ""
    version: str = "previous"
    size: int = 0  # 0: not given (unsigned requests only); max_bytes bounds it then
    allow_downgrade: bool = False
    signed: bool = False
    rollback: bool = False
    id: str = ""


def request_id(args: dict[str, Any]) -> str:
    rid = args.get("id", "")
    if not isinstance(rid, str) or len(rid) > 64:
        raise PayloadError("id must be a string of at most 64 characters")
    return rid


def parse_request(args: dict[str, Any], cfg: UpdateConfig, device_id: str,
                  now: float | None = None) -> Request:
    """The request cmd/update carries, or PayloadError saying what to send instead."""
    rid = request_id(args)
    if args.get("rollback") is True:  # back to `previous`: a version this device verified
        if set(args) - {"rollback", "id"}:
            raise PayloadError("rollback takes only an id")
        return Request(rollback=True, id=rid)
    if "envelope" in args:
        fields = _open_envelope(args, cfg, device_id, time.time() if now is None else now)
        signed = True
    else:
        if "signature" in args and not cfg.public_key:
            raise PayloadError("a signature was given but update.public_key is not set on "
                               "the device to check it")
        if "signature" in args:
            raise PayloadError("a signature must come with the envelope it signs: send "
                               f"{{envelope, signature, id}} ({HOW_TO_SIGN})")
        if not cfg.allow_unsigned:
            raise PayloadError(
                "this device requires a signature (update.public_key is set): send "
                f"{{envelope, signature, id}} ({HOW_TO_SIGN})" if cfg.public_key else
                "this device accepts signed updates only and has no update.public_key: "
                "install the public key from `make keys` (UPDATE_PUBLIC_KEY=keys/update.pub "
                "make install-device), or opt out with update.allow_unsigned = true")
        fields = {k: v for k, v in args.items() if k != "id"}
        extra = set(fields) - FIELDS
        if extra:
            raise PayloadError(f"unknown field {sorted(extra)[0]!r}: an update takes url, "
                               "sha256, version, size, allow_downgrade and id")
        signed = False
    return _fields(fields, cfg, signed, rid)


def _open_envelope(args: dict[str, Any], cfg: UpdateConfig, device_id: str,
                   now: float) -> dict[str, Any]:
    if set(args) - {"envelope", "signature", "id"}:
        raise PayloadError("a signed update carries only envelope, signature and id: every "
                           "other field goes inside the signed envelope")
    env, sig = args.get("envelope"), args.get("signature", "")
    if not isinstance(env, str) or not env or len(env) > MAX_ENVELOPE:
        raise PayloadError(f"envelope must be the signed JSON text (at most {MAX_ENVELOPE} "
                           "characters)")
    if not isinstance(sig, str) or not sig or len(sig) > 200:
        raise PayloadError("signature must be base64 text (Ed25519, 88 characters)")
    if not cfg.public_key:
        raise PayloadError("a signed update was sent but update.public_key is not set on "
                           "the device to check it")
    try:
        check_signature(cfg.public_key, env.encode(), sig)
    except UpdateError as exc:
        raise PayloadError(str(exc)) from None
    try:
        fields = json.loads(env)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        raise PayloadError("the signed envelope is not a JSON object")
    extra = set(fields) - FIELDS - SIGNED_ONLY
    if extra:
        raise PayloadError(f"the signed envelope has an unknown field {sorted(extra)[0]!r}")
    devices, fleet = fields.pop("devices", []), fields.pop("fleet", "")
    if not isinstance(devices, list) or not isinstance(fleet, str):
        raise PayloadError("the signed envelope's devices must be a list of ids, its fleet a "
                           "string")
    if device_id not in devices and not (fleet and fleet == cfg.fleet):
        raise PayloadError(f"the signed envelope is for devices {devices[:5]}"
                           + (f" / fleet {fleet!r}" if fleet else "")
                           + f", not this device ({device_id!r}, update.fleet "
                           f"{cfg.fleet!r})")
    not_before = fields.pop("not_before", 0)
    if isinstance(not_before, bool) or not isinstance(not_before, int | float):
        raise PayloadError("the signed envelope's not_before must be a Unix time")
    if now < not_before:
        raise PayloadError(f"the signed envelope is not valid before "
                           f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(not_before))}"
                           " (is this device's clock right?)")
    return fields


def _fields(f: dict[str, Any], cfg: UpdateConfig, signed: bool, rid: str) -> Request:
    url, sha, version = f.get("url"), f.get("sha256"), f.get("version")
    size, downgrade = f.get("size", 0), f.get("allow_downgrade", False)
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise PayloadError("url must be an https:// URL or an absolute path on the device")
    try:
        kind = source_kind(url)
    except UpdateError as exc:
        raise PayloadError(str(exc)) from None
    if kind not in cfg.allowed_schemes:
        raise PayloadError(f"url scheme {kind!r} is not allowed here (update."
                           f"allowed_schemes = {list(cfg.allowed_schemes)})")
    if not isinstance(sha, str) or not SHA256.match(sha):
        raise PayloadError("sha256 must be the archive's sha256: 64 lowercase hex digits")
    if not isinstance(version, str) or not VERSION.match(version):
        raise PayloadError("version must be 1-64 letters, digits, '.', '_', '+' or '-', "
                           "starting with a letter or digit")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise PayloadError("size must be the archive's size in bytes")
    if signed and not size:
        raise PayloadError("the signed envelope must give the archive's size")
    if size > cfg.max_bytes:
        raise PayloadError(f"the archive is {size} bytes, over update.max_bytes "
                           f"({cfg.max_bytes})")
    if not isinstance(downgrade, bool):
        raise PayloadError("allow_downgrade must be true or false")
    return Request(url=url, sha256=sha, version=version, size=size,
                   allow_downgrade=downgrade, signed=signed, id=rid)


def version_key(version: str) -> tuple:
    """Order of versions: PEP 440 (packaging.version) when both parse, else natural order
    (runs of digits compare as numbers, letters as text: 2.10 > 2.9)."""
    parts = re.findall(r"\d+|[^\d.+_-]+", version)
    return tuple((0, int(p), "") if p.isdigit() else (-1, 0, p) for p in parts)


def is_older(new: str, current: str) -> bool:
    """True when new is strictly older than current (unknown current: never)."""
    if not current:
        return False
    try:
        from packaging.version import InvalidVersion, Version

        try:
            return Version(new) < Version(current)
        except InvalidVersion:
            pass
    except ImportError:
        pass
    return version_key(new) < version_key(current)


def load_public_key(text: str):
    """An Ed25519 public key: base64 of the 32 raw bytes, or a PEM file's path/contents."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    text = text.strip()
    if text.startswith("/"):
        text = Path(text).read_text()
    if "BEGIN PUBLIC KEY" in text:
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise UpdateError("update.public_key is not an Ed25519 key")
        return key
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))


def check_signature(public_key: str, data: bytes, signature: str) -> None:
    """Ed25519 over the envelope's exact bytes (which hold the archive's sha256)."""
    try:
        from cryptography.exceptions import InvalidSignature
    except ImportError:
        raise UpdateError("update.public_key is set but the `cryptography` library is "
                          "missing: apt install python3-cryptography") from None
    try:
        key = load_public_key(public_key)
        key.verify(base64.b64decode(signature, validate=True), data)
    except InvalidSignature:
        raise UpdateError("bad signature: the update was not signed by the key in "
                          "update.public_key; nothing was fetched") from None
    except (ValueError, OSError) as exc:
        raise UpdateError(f"the signature or update.public_key cannot be read: {exc}") from None
