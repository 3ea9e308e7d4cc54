"""`make deploy` / `make rollback`: put a model bundle on one Pi or a fleet, safely.

A deploy ends with the new model serving, or with the old one still serving and a clear
message. Verify the bundle here (version, sha256s, Edge TPU checks, golden self-test), then
per host, holding the device's lock (flock on models/.deploy.lock) from before the copy
until after the confirmation or the rollback: rsync into models/<version>.partial → check
the sha256s there → rename to models/<version> → switch `current` atomically (a rename) →
reload with a fresh nonce → wait until the device's retained `status` echoes that nonce
while serving the new sha256 (its reply to the nonce tells a refusal at once). Only then
does `previous` move and old versions get pruned. Any failure after the switch (a refused
or failed reload, a timeout, a dropped ssh, an exception) switches back and reloads. A
fleet goes one host at a time and stops at the first failure (the first host is the canary).
"""

from __future__ import annotations

import argparse
import logging
import secrets
import shlex
import sys
from pathlib import Path

from device.bundle import TPU_MODEL, Bundle, load_bundle
from device.errors import CoralError
from host_training.fleet.broker import CONFIG_HELP, load_mqtt
from host_training.fleet.remote import (
    NONCE_FILE,
    PENDING,
    DeployError,
    Target,
    UsageError,
    check_version,
    version_dir,
)
from host_training.fleet.watch import DeviceWatch

log = logging.getLogger("host_training.fleet.deploy")
MQTT_RELOAD = "mqtt"  # --reload-cmd mqtt: send cmd/reload with the nonce over the broker

__all__ = ["DeployError", "Target", "UsageError", "deploy_one", "main", "rollback"]


def verify_locally(path: Path, allow_cpu: bool) -> Bundle:
    """Refuse a bundle before anything leaves this machine."""
    from device.inference import create_classifier
    from device.selftest import self_test
    from host_training.edgetpu.edgetpu_check import analyse
    from host_training.train.tflite_model import load_tflite

    bundle = load_bundle(path)  # every sha256
    check_version(bundle.version)  # before anything is written anywhere
    check = analyse(load_tflite(bundle.cpu_model))
    if not check["ok"] and not allow_cpu:
        raise DeployError(f"{path}: check-edgetpu says {check['verdict']}: fix the model, or "
                          "ALLOW_CPU=1 to deploy anyway")
    if bundle.tpu_model is None and not allow_cpu:
        raise DeployError(f"{path} has no {TPU_MODEL}: run `coral-train compile {path}` on an "
                          "x86-64 Linux host, or ALLOW_CPU=1 for a CPU-only device")
    clf = create_classifier(bundle, "cpu")
    try:
        self_test(clf, bundle)
    finally:
        clf.close()
    return bundle


def device_id(t: Target) -> str:
    import re

    raw = t.device_id or t.ssh("hostname")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)[:64] or "coral-classifier"


def watch(t: Target, device: str) -> DeviceWatch:
    return DeviceWatch(t.broker, device, "" if t.mqtt else t.topic_prefix,
                       t.host.split("@")[-1].strip("[]"), mqtt=t.mqtt)


def reload(t: Target, w: DeviceWatch, sha256: str, timeout: float,
           start: bool = False) -> tuple[bool, str]:
    """Reload with a fresh nonce and wait for the device to confirm exactly that reload.
    start: the device had no model, so its service is not running: start it instead (the
    daemon reads the nonce when it starts, as on SIGHUP)."""
    nonce = secrets.token_hex(8)
    if t.reload_cmd == MQTT_RELOAD and not start:
        w.command("reload", {"nonce": nonce})
    else:
        t.write_file(NONCE_FILE, nonce + "\n")
        t.ssh(t.start_cmd if start else t.reload_cmd)
    return w.wait_reload(nonce, sha256, timeout)


def deploy_one(t: Target, bundle: Bundle, timeout: float, keep: int,
               lock_wait: float = 300) -> None:
    version = version_dir(bundle.version, bundle.sha256)
    device = device_id(t)
    w = watch(t, device)
    try:
        with t.lock(lock_wait):
            t.recover()
            links = t.links()
            old, old_path = links.get("current", ""), links.get("current_path", "")
            if old_path.rstrip("/").endswith("/" + version):
                log.info("%s: already serving %s", t.host, version)
                return
            log.info("%s: serving %s; deploying %s", t.host, old or "(nothing)", version)
            old_sha = model_sha(t, old_path)
            _stage(t, bundle, version, {links.get("current_path"), links.get("previous_path")})
            t.write_file(PENDING, old + "\n")
            try:
                t.set_link("current", version)
                ok, why = reload(t, w, bundle.sha256, timeout, start=not old)
            except BaseException as exc:  # ssh dropped, interrupted, ...: never stay switched
                ok, why = False, f"{type(exc).__name__}: {exc}"
            if not ok:
                _switch_back(t, w, old, old_sha, timeout)
                raise DeployError(f"{t.host}: deploy of {version} failed: {why}. Rolled back "
                                  f"to {old or 'nothing'}; the old model keeps serving.")
            if old:
                t.set_link("previous", old)  # only now: the new version is confirmed
            t.remove_file(PENDING)
            t.prune(keep)
    finally:
        w.close()
    log.info("%s: now serving %s (sha256 %s…)", t.host, version, bundle.sha256[:12])


def _stage(t: Target, bundle: Bundle, version: str, pinned: set[str | None]) -> None:
    """Copy into <version>.partial, check it there, rename it into place."""
    q = shlex.quote
    staging = f"{version}.partial"
    exists = t.ssh(f"cd -- {t.q} && if [ -d {q(version)} ]; then pwd -P; fi")
    if exists and f"{exists}/{version}" in pinned:
        # previous is this very version (same sha256 prefix): check it, do not replace it
        target = f"{t.models}/{version}"
    else:
        t.rsync(str(bundle.root), f"{t.models}/{staging}")
        target = f"{t.models}/{staging}"
    sums = "".join(f"{info['sha256']}  {name}\n" for name, info in
                   bundle.manifest["files"].items())
    try:
        t.ssh(f"cd -- {q(target)} && sha256sum --quiet --strict -c -", input=sums)
    except DeployError:
        t.ssh(f"cd -- {t.q} && rm -rf -- {q(staging)}", check=False)
        raise
    if target.endswith(".partial"):
        t.ssh(f"cd -- {t.q} && rm -rf -- {q(version)} && mv -T -- {q(staging)} {q(version)}")


def model_sha(t: Target, path: str) -> str:
    """The sha256 a version folder on the device serves ('' when there is none)."""
    import json

    if not path:
        return ""
    text = t.ssh(f"cat -- {shlex.quote(path)}/manifest.json", check=False)
    try:
        return json.loads(text)["files"]["model_quant.tflite"]["sha256"]
    except (ValueError, KeyError, TypeError):
        return ""


def _switch_back(t: Target, w: DeviceWatch, old: str, old_sha: str, timeout: float) -> None:
    log.error("%s: switching back to %s", t.host, old or "(nothing)")
    try:
        t.set_link("current", old)
        t.remove_file(PENDING)
    except CoralError as exc:
        log.error("%s: switching back failed: %s; the next deploy restores current from "
                  "models/%s", t.host, exc, PENDING)
        return
    if not old:
        return
    try:  # the old model never stopped serving if the new one was refused; if the state
        # is unknown (timeout, dropped ssh) this makes the daemon load `current` again
        ok, why = reload(t, w, old_sha, min(timeout, 30)) if old_sha else (True, "")
    except CoralError as exc:
        ok, why = False, str(exc)
    if not ok:
        log.warning("%s: the reload after switching back was not confirmed (%s)", t.host, why)


def rollback(t: Target, timeout: float) -> None:
    """Swap current and previous, reload, confirm; swap back if the device refuses."""
    device = device_id(t)
    w = watch(t, device)
    try:
        with t.lock():
            t.recover()
            links = t.links()
            current, previous = links.get("current", ""), links.get("previous", "")
            if not previous or not links.get("previous_path"):
                raise DeployError(f"{t.host}: no previous version to roll back to")
            sha = model_sha(t, links["previous_path"])
            if not sha:
                raise DeployError(f"{t.host}: {previous} has no readable manifest.json")
            t.write_file(PENDING, current + "\n")
            try:
                t.set_link("current", previous)
                ok, why = reload(t, w, sha, timeout)
            except BaseException as exc:
                ok, why = False, f"{type(exc).__name__}: {exc}"
            if not ok:
                _switch_back(t, w, current, model_sha(t, links.get("current_path", "")),
                             timeout)
                raise DeployError(f"{t.host}: rollback to {previous} not confirmed: {why}; "
                                  f"{current} keeps serving")
            t.set_link("previous", current)
            t.remove_file(PENDING)
    finally:
        w.close()
    log.info("%s: rolled back to %s", t.host, previous)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="coral-deploy", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("deploy", "rollback"):
        p = sub.add_parser(name)
        p.add_argument("--host", action="append", required=True, help="user@host (repeat)")
        p.add_argument("--root", default="/var/lib/coral-classifier")
        p.add_argument("--ssh_opts", "--ssh-opts", dest="ssh_opts", default="")
        p.add_argument("--reload_cmd", "--reload-cmd", dest="reload_cmd",
                       default="sudo -n systemctl reload coral-classifier",
                       help="run on the device to reload (install-device's sudoers rule "
                            "allows exactly this); 'mqtt' sends cmd/reload instead")
        p.add_argument("--start_cmd", "--start-cmd", dest="start_cmd",
                       default="sudo -n systemctl restart coral-classifier",
                       help="run on the device for its first model (the service is not "
                            "running yet); the sudoers rule allows exactly this too")
        p.add_argument("--device_id", "--device-id", dest="device_id", default="",
                       help="the device's mqtt.device_id (default: its host name)")
        p.add_argument("--broker", default="", help="host:port (default: the config's "
                       "broker, else <host>:1883)")
        p.add_argument("--config", default=None, help=CONFIG_HELP)
        p.add_argument("--timeout", type=float, default=60.0)
        if name == "deploy":
            p.add_argument("--model", required=True, help="bundle folder")
            p.add_argument("--allow_cpu", "--allow-cpu", dest="allow_cpu", action="store_true")
            p.add_argument("--keep", type=int, default=3, help="versions kept per device")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        mqtt = load_mqtt(a.config)
        targets = [Target(h, a.root, a.ssh_opts, a.reload_cmd, a.start_cmd, a.device_id,
                          a.broker, mqtt=mqtt) for h in a.host]
        if a.command == "rollback":
            for t in targets:
                rollback(t, a.timeout)
            return 0
        if a.keep < 2:
            raise UsageError("--keep must be at least 2 (current and previous)")
        bundle = verify_locally(Path(a.model), a.allow_cpu)
        for i, t in enumerate(targets):
            deploy_one(t, bundle, a.timeout, a.keep)
            if i == 0 and len(targets) > 1:
                log.info("canary %s is serving the new model; continuing with the fleet", t.host)
    except CoralError as exc:
        log.error("%s", exc)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
