"""`make rollout`: a pull update for a fleet over MQTT, canary first.

The bundle is verified here (as `make deploy` does), packed into one archive and served
over HTTP from this machine (or published at a URL you give). Each device gets
`cmd/update {envelope, signature, id}`: an envelope (url, sha256, size, version, the
device's id, not_before) signed with --sign-key (Ed25519, `make keys`), which the device
checks before it fetches a byte; then it fetches, verifies, switches, self-tests and
confirms on its own (devices behind NAT need only reach the broker and the URL). Without
a key the request is unsigned, which only devices with update.allow_unsigned accept.
The canary goes first; the rollout waits for its confirmation and then for its health —
running, frames flowing, no error counter rising for --health seconds — before the rest,
one at a time, and stops at the first failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from device.errors import CoralError
from host_training.fleet.broker import CONFIG_HELP, load_mqtt
from host_training.fleet.remote import DeployError, UsageError, check_version
from host_training.fleet.watch import DeviceWatch

log = logging.getLogger("host_training.fleet.rollout")


def advertised_host(broker_host: str) -> str:
    """The address devices reach this machine at: the one that routes to the broker."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((broker_host, 9))  # no packet is sent for a UDP connect
            return s.getsockname()[0]
    except OSError:
        return socket.gethostname()


def update_one(w: DeviceWatch, request: dict, timeout: float) -> dict:
    """Send cmd/update and wait for its final reply (progress replies are logged)."""
    seen = 0

    def final(status, replies):
        nonlocal seen
        for name, r in replies[seen:]:
            seen += 1
            if name != "update" or r.get("id", request["id"]) != request["id"]:
                continue  # another request's reply (a refusal at once carries no id)
            if r.get("state") in ("done", "failed", "rolled_back") or not r.get("ok"):
                return r
            log.info("%s: %s%s", w.device_id, r.get("state"),
                     f" {r.get('bytes', 0)}/{r.get('total', 0)} bytes"
                     if r.get("state") == "downloading" else "")
        return None

    w.command("update", request)
    got = w.wait(final, timeout)
    if got is None:
        raise DeployError(f"{w.device_id}: no result for the update within {timeout:.0f} s "
                          "(is it online? `make fleet` shows it)")
    return got


def healthy(w: DeviceWatch, sha256: str, seconds: float) -> tuple[bool, str]:
    """Serving sha256, running, camera frames still arriving (classified, or passed on by
    a trigger when the scene is still) and no error counter rising for `seconds`."""
    start = dict(w.status)
    if start.get("model", {}).get("sha256") != sha256:
        return False, "the device does not report the new model in its status"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        s = w.status
        if s.get("state") not in ("running", "paused"):
            return False, f"state is {s.get('state')!r}"
        if s.get("model", {}).get("sha256") != sha256:
            return False, "the device stopped serving the new model"
        rose = {k: v - start.get("errors", {}).get(k, 0) for k, v in s.get("errors", {}).items()
                if v > start.get("errors", {}).get(k, 0)}
        if rose:
            return False, f"errors rose: {rose} (last_error: {s.get('last_error', '')[:200]})"
    def seen(s: dict) -> int:  # classified, or passed on by a trigger (a still scene)
        return int(s.get("frames", 0)) + int(s.get("frames_gated", 0))

    if seen(w.status) <= seen(start):
        return False, "no frames classified while watching"
    return True, ""


def rollout(model: Path, devices: list[str], broker: str, *, allow_cpu: bool = False,
            url_base: str = "", serve_address: str = "0.0.0.0", port: int = 0,
            sign_key: Path | None = None, health: float = 30.0, timeout: float = 300.0,
            prefix: str = "", mqtt=None) -> None:
    from host_training.fleet.broker import broker_config
    from host_training.fleet.deploy import verify_locally
    from host_training.fleet.serve import BundleServer, pack, signed_request

    bundle = verify_locally(model, allow_cpu)
    check_version(bundle.version)
    with tempfile.TemporaryDirectory(prefix="coral-rollout-") as tmp:
        archive = Path(tmp) / f"{bundle.version}.tar.gz"
        sha = pack(bundle.root, archive)
        server = None
        if url_base:
            url = f"{url_base.rstrip('/')}/{archive.name}"
            log.info("devices fetch %s: upload %s there (sha256 %s)", url, archive, sha)
        else:
            server = BundleServer(serve_address, port)
            host = (serve_address if serve_address not in ("0.0.0.0", "::")
                    else advertised_host(broker_config(broker, mqtt).host))
            url = f"http://{host}:{server.port}{server.add(archive)}"
            log.info("serving %s (%d bytes, sha256 %s…) at %s", archive.name,
                     archive.stat().st_size, sha[:12], url)
        try:
            for i, device in enumerate(devices):
                role = "canary" if i == 0 and len(devices) > 1 else "device"
                w = DeviceWatch(broker, device, prefix, commands=("update",), mqtt=mqtt)
                try:
                    rid = f"rollout-{os.getpid()}-{i}"
                    fields = {"url": url, "sha256": sha, "version": bundle.version,
                              "size": archive.stat().st_size}
                    request = (signed_request(sign_key, **fields, devices=[device],
                                              request_id=rid) if sign_key
                               else {**fields, "id": rid})
                    log.info("%s %s: updating to %s", role, device, bundle.version)
                    r = update_one(w, request, timeout)
                    if not r.get("ok") or r.get("state") != "done":
                        raise DeployError(f"{role} {device}: update {r.get('state', 'refused')}"
                                          f": {r.get('error', '?')}. Stopped; the devices after "
                                          "it were not touched.")
                    w.wait(lambda s, _: s.get("model", {}).get("sha256") == bundle.sha256, 10)
                    ok, why = healthy(w, bundle.sha256, health)
                    if not ok:
                        back = update_one(w, {"rollback": True, "id": request["id"] + "-back"},
                                          timeout)
                        undone = ("rolled back to its previous model" if back.get("ok") else
                                  f"its rollback failed too: {back.get('error', '?')}")
                        raise DeployError(f"{role} {device}: serving {bundle.version} but not "
                                          f"healthy for {health:.0f} s: {why}; {undone}. "
                                          "Stopped; the devices after it were not touched.")
                    log.info("%s %s: serving %s and healthy for %.0f s", role, device,
                             bundle.version, health)
                finally:
                    w.close()
        finally:
            if server is not None:
                server.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="coral-rollout", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="bundle folder")
    ap.add_argument("--device", action="append", required=True,
                    help="a device id (mqtt.device_id); repeat; the first is the canary")
    ap.add_argument("--broker", default="", help="host:port (default: the config's broker, "
                    "else localhost:1883)")
    ap.add_argument("--config", default=None, help=CONFIG_HELP)
    ap.add_argument("--url_base", "--url-base", dest="url_base", default="",
                    help="publish the archive there yourself (https://...) instead of "
                         "serving it from this machine")
    ap.add_argument("--serve_address", "--serve-address", dest="serve_address",
                    default="0.0.0.0", help="address the HTTP server listens on")
    ap.add_argument("--port", type=int, default=0, help="HTTP port (0 = any free one)")
    ap.add_argument("--sign_key", "--sign-key", dest="sign_key", type=Path, default=None,
                    help="Ed25519 private key (PEM, from `make keys`): signs each device's "
                         "envelope; devices accept unsigned updates only with "
                         "update.allow_unsigned")
    ap.add_argument("--health", type=float, default=30.0,
                    help="seconds each device must stay healthy before the next")
    ap.add_argument("--timeout", type=float, default=300.0, help="per device update timeout")
    ap.add_argument("--allow_cpu", "--allow-cpu", dest="allow_cpu", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the outcome as JSON")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if len(set(a.device)) != len(a.device):
            raise UsageError("a device is listed twice")
        rollout(Path(a.model), a.device, a.broker, allow_cpu=a.allow_cpu, url_base=a.url_base,
                serve_address=a.serve_address, port=a.port, sign_key=a.sign_key,
                health=a.health, timeout=a.timeout, mqtt=load_mqtt(a.config))
    except CoralError as exc:
        log.error("%s", exc)
        if a.json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        return exc.exit_code
    if a.json:
        print(json.dumps({"ok": True, "devices": a.device}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
