"""`make deploy` / `make rollback`: put a model bundle on one Pi or a fleet, safely.

A deploy ends with the new model serving, or with the old one still serving and a clear
message. Per host: verify the bundle here (sha256s, Edge TPU checks, golden self-test) →
rsync into models/<version>.partial → check the sha256s there → rename to
models/<version> → switch the `current` symlink atomically (rename) → reload the service
→ wait until the device's retained `status` reports the new sha256. On failure or
timeout: switch back, reload, fail. A fleet goes one host at a time and stops at the
first failure (the first host is the canary).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from device.bundle import TPU_MODEL, Bundle, load_bundle
from device.errors import CoralError

log = logging.getLogger("host_training.deploy")


class DeployError(CoralError):
    exit_code = 6


@dataclass
class Target:
    host: str  # user@host, as ssh takes it
    root: str = "/var/lib/coral-classifier"
    ssh_opts: str = ""
    reload_cmd: str = "sudo systemctl reload coral-classifier"
    device_id: str = ""
    broker: str = ""  # host:port of the MQTT broker the device reports to
    topic_prefix: str = "coral-classifier"

    @property
    def models(self) -> str:
        return f"{self.root}/models"

    def ssh(self, command: str, check: bool = True, input: str | None = None) -> str:
        args = ["ssh", *shlex.split(self.ssh_opts), self.host, command]
        r = subprocess.run(args, capture_output=True, text=True, input=input, timeout=120)
        if check and r.returncode != 0:
            raise DeployError(f"{self.host}: `{command}` failed ({r.returncode}): "
                              f"{r.stderr.strip()[-400:]}")
        return r.stdout.strip()

    def rsync(self, src: Path, dest: str) -> None:
        ssh = " ".join(["ssh", *[shlex.quote(o) for o in shlex.split(self.ssh_opts)]])
        r = subprocess.run(["rsync", "-a", "--delete", "-e", ssh, f"{src}/",
                            f"{self.host}:{dest}/"], capture_output=True, text=True,
                           timeout=600)
        if r.returncode != 0:
            raise DeployError(f"{self.host}: copying the bundle failed: {r.stderr.strip()}")


def verify_locally(path: Path, allow_cpu: bool) -> Bundle:
    """Refuse a bundle before anything leaves this machine."""
    from device.inference import create_classifier
    from device.selftest import self_test
    from host_training.edgetpu_check import analyse
    from host_training.tflite_model import load_tflite

    bundle = load_bundle(path)  # every sha256
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


def version_dir(bundle: Bundle) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in bundle.version)
    return f"{safe}-{bundle.sha256[:12]}"


class StatusWatch:
    """Follows the device's retained status topic (paho) to see which model serves."""

    def __init__(self, t: Target, device_id: str):
        from device.config import MqttConfig
        from device.mqtt.client import guarded, make_client

        host, _, port = (t.broker or f"{t.host.split('@')[-1]}:1883").rpartition(":")
        self.status: dict = {}
        self.changed = threading.Condition()
        self.client = make_client(MqttConfig(host=host, port=int(port)),
                                  f"coral-deploy-{os.getpid()}")
        topic = f"{t.topic_prefix}/{device_id}/status"
        self.client.on_connect = guarded(lambda c, u, f, rc, p: c.subscribe(topic, qos=1))
        self.client.on_message = guarded(self._on_message)
        try:
            self.client.connect(host, int(port))
        except OSError as exc:
            raise DeployError(f"cannot reach the broker {host}:{port} to watch {device_id} "
                              f"({exc}): give BROKER=host:port") from None
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self.changed:
            try:
                self.status = json.loads(msg.payload)
            except ValueError:
                return
            self.changed.notify_all()

    def wait_for(self, sha256: str, since: float, timeout: float) -> tuple[bool, str]:
        """(True, "") once the device serves sha256; (False, why) on failure or timeout."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                s = self.status
                if s.get("model", {}).get("sha256") == sha256 and s.get("state") != "stopped":
                    return True, ""
                err = s.get("last_error", "")
                if s.get("ts", 0) >= since and err.startswith("reload failed"):
                    return False, err
                left = deadline - time.monotonic()
                if left <= 0:
                    served = s.get("model", {}).get("sha256", "?")[:12]
                    return False, (f"the device did not report the new model within "
                                   f"{timeout:.0f} s (it serves {served}…)")
                self.changed.wait(min(left, 0.5))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _switch(t: Target, version: str) -> None:
    """Point models/current at version with one rename: never a moment without it."""
    t.ssh(f"cd {shlex.quote(t.models)} && ln -sfn {shlex.quote(version)} .current.tmp && "
          "mv -T .current.tmp current")


def deploy_one(t: Target, bundle: Bundle, timeout: float, keep: int) -> None:
    version = version_dir(bundle)
    device_id = t.device_id or t.ssh("hostname")
    models = shlex.quote(t.models)
    previous = t.ssh(f"mkdir -p {models} && readlink {models}/current || true")
    log.info("%s: serving %s; deploying %s", t.host, previous or "(nothing)", version)
    staging = f"{t.models}/{version}.partial"
    t.rsync(bundle.root, staging)
    sums = "".join(f"{info['sha256']}  {name}\n" for name, info in
                   bundle.manifest["files"].items())
    t.ssh(f"cd {shlex.quote(staging)} && sha256sum --quiet -c -", input=sums)
    t.ssh(f"cd {models} && rm -rf {shlex.quote(version)} && mv -T {shlex.quote(version)}.partial "
          f"{shlex.quote(version)}")
    watch = StatusWatch(t, device_id)
    try:
        since = time.time()
        _switch(t, version)
        if previous and previous != version:
            t.ssh(f"cd {models} && ln -sfn {shlex.quote(previous)} .previous.tmp && "
                  "mv -T .previous.tmp previous")
        t.ssh(t.reload_cmd)
        ok, why = watch.wait_for(bundle.sha256, since, timeout)
        if not ok:
            if previous and previous != version:
                log.error("%s: %s; switching back to %s", t.host, why, previous)
                _switch(t, previous)
                t.ssh(t.reload_cmd, check=False)
            raise DeployError(f"{t.host}: deploy of {version} failed: {why}. Rolled back to "
                              f"{previous or 'nothing'}; the old model keeps serving.")
    finally:
        watch.close()
    _prune(t, keep)
    log.info("%s: now serving %s (sha256 %s…)", t.host, version, bundle.sha256[:12])


def _prune(t: Target, keep: int) -> None:
    models = shlex.quote(t.models)
    # real directories only (not the current/previous symlinks), newest first
    listing = t.ssh(f"cd {models} && find . -mindepth 1 -maxdepth 1 -type d -printf "
                    "'%T@ %f\\n' | sort -rn | cut -d' ' -f2; echo ---; "
                    "readlink current; readlink previous || true")
    names, _, pinned = listing.partition("---")
    pinned_set = set(pinned.split())
    versions = [n for n in names.split() if not n.endswith(".partial")]
    for old in [v for v in versions if v not in pinned_set][max(0, keep - len(pinned_set)):]:
        t.ssh(f"rm -rf {models}/{shlex.quote(old)}")
        log.info("%s: removed old version %s", t.host, old)


def rollback(t: Target, timeout: float) -> None:
    models = shlex.quote(t.models)
    previous = t.ssh(f"readlink {models}/previous || true")
    current = t.ssh(f"readlink {models}/current || true")
    if not previous:
        raise DeployError(f"{t.host}: no previous version to roll back to")
    sha = json.loads(t.ssh(f"cat {models}/{shlex.quote(previous)}/manifest.json"))["files"][
        "model_quant.tflite"]["sha256"]
    device_id = t.device_id or t.ssh("hostname")
    watch = StatusWatch(t, device_id)
    try:
        since = time.time()
        _switch(t, previous)
        t.ssh(f"cd {models} && ln -sfn {shlex.quote(current)} .previous.tmp && "
              "mv -T .previous.tmp previous")
        t.ssh(t.reload_cmd)
        ok, why = watch.wait_for(sha, since, timeout)
    finally:
        watch.close()
    if not ok:
        raise DeployError(f"{t.host}: rollback to {previous} not confirmed: {why}")
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
                       default="sudo systemctl reload coral-classifier")
        p.add_argument("--device_id", "--device-id", dest="device_id", default="",
                       help="the device's mqtt.device_id (default: its host name)")
        p.add_argument("--broker", default="", help="host:port (default: <host>:1883)")
        p.add_argument("--timeout", type=float, default=60.0)
        if name == "deploy":
            p.add_argument("--model", required=True, help="bundle folder")
            p.add_argument("--allow_cpu", "--allow-cpu", dest="allow_cpu", action="store_true")
            p.add_argument("--keep", type=int, default=3, help="versions kept per device")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        targets = [Target(h, a.root, a.ssh_opts, a.reload_cmd, a.device_id, a.broker)
                   for h in a.host]
        if a.command == "rollback":
            for t in targets:
                rollback(t, a.timeout)
            return 0
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
