"""doctor's checks of what a config points at: the broker (with the daemon's own client
factory), the model bundle on its backend, the state disk, and the systemd service."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from device.config import Config

OK, WARN, FAIL = "ok", "warn", "fail"
# edgetpu_compiler major version -> the minimum Edge TPU runtime its models need
COMPILER_RUNTIME = {16: 14, 15: 13, 14: 13, 2: 10}


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def check_broker(cfg: Config) -> Check:
    from device.mqtt.client import diagnose_connection

    m = cfg.mqtt
    where = f"{m.host}:{m.port}{' (TLS)' if m.tls else ''}"
    problem = diagnose_connection(m, timeout=3)
    if problem:
        return Check("broker", FAIL, problem, "check mqtt.host, mqtt.port and the TLS settings")
    import threading

    from device.errors import ConfigError
    from device.mqtt.client import make_client

    done = threading.Event()
    result: dict = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        done.set()

    try:  # the daemon's own factory: the same auth and TLS settings as the daemon
        c = make_client(m, f"doctor-{os.getpid()}")
    except ConfigError as exc:
        return Check("broker", FAIL, str(exc), "fix the [mqtt] section")
    c.on_connect = on_connect
    try:
        c.connect(m.host, m.port, 10)
        c.loop_start()
        done.wait(5)
    except OSError as exc:
        return Check("broker", FAIL, f"{where}: {exc}", "check the broker address")
    finally:
        c.loop_stop()
        c.disconnect()
    rc = result.get("rc")
    if rc is None:
        return Check("broker", FAIL, f"{where}: no answer to CONNECT", "is it an MQTT broker?")
    if rc.is_failure:
        return Check("broker", FAIL, f"{where}: refused ({rc})",
                     "check mqtt.username and the password file, and the broker's ACL")
    return Check("broker", OK, f"{where} accepts {m.username or 'anonymous'}")


def compile_advice(root, machine: str | None = None) -> str:
    """How to get an Edge TPU model, for the machine doctor runs on: edgetpu_compiler
    exists for x86-64 Linux only, so a Pi is told where to compile, not what to run."""
    machine = machine or platform.machine()
    if machine in ("x86_64", "AMD64"):
        return (f"coral-train compile {root} (needs edgetpu_compiler), or set "
                "model.backend = \"cpu\"")
    return ("this machine cannot compile for the Edge TPU (edgetpu_compiler is x86-64 only): "
            "compile the bundle on an x86-64 workstation and deploy it from there with "
            "`make deploy HOST=... MODEL=...`; or set model.backend = \"cpu\" to run on "
            "this CPU")


def check_model(cfg: Config, installed_runtime: int | None = None) -> list[Check]:
    from device.bundle import load_bundle
    from device.errors import CoralError
    from device.inference import create_classifier

    try:
        bundle = load_bundle(cfg.model.path, cfg.model.labels or None)
    except CoralError as exc:
        return [Check("model", FAIL, str(exc), "deploy a bundle (make deploy) or fix model.path")]
    out = [Check("model", OK, f"{bundle.name} v{bundle.version}, sha256s verified")]
    compiled = bundle.tpu_model is not None
    needs_tpu = cfg.model.backend == "edgetpu" or (cfg.model.backend == "auto"
                                                   and not cfg.model.allow_cpu_fallback)
    out.append(Check("model for the Edge TPU", OK if compiled else (FAIL if needs_tpu else WARN),
                     "compiled (_edgetpu.tflite present)" if compiled else "not compiled",
                     "" if compiled else compile_advice(bundle.root)))
    compiler = bundle.manifest.get("edgetpu", {}).get("compiler_version", "")
    if compiler and compiler.split(".")[0].isdigit():
        need = COMPILER_RUNTIME.get(int(compiler.split(".")[0]))
        if need and installed_runtime is not None and installed_runtime < need:
            out.append(Check("runtime version", FAIL, f"the model needs Edge TPU runtime {need}"
                             f" (compiler {compiler}); installed: {installed_runtime}",
                             "sudo apt-get install --only-upgrade libedgetpu1-std"))
        elif need:
            out.append(Check("runtime version", OK, f"needs runtime {need} (compiler {compiler})"))
    try:
        clf = create_classifier(bundle, "cpu")
        clf.close()
        out.append(Check("labels vs outputs", OK, f"{len(bundle.labels)} labels = outputs"))
    except CoralError as exc:
        out.append(Check("labels vs outputs", FAIL, str(exc), "use the bundle's own labels"))
    return out


def check_disk(cfg: Config) -> Check:
    path = cfg.state.resolved_dir()
    probe = path if path.exists() else next((p for p in path.parents if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    need = 2 * cfg.state.outbox_max_bytes
    if free < need:
        return Check("disk", FAIL, f"{free >> 20} MB free at {probe}; the outbox may need "
                     f"{need >> 20} MB", "free space, or lower state.outbox_max_bytes")
    writable = os.access(probe, os.W_OK)
    return Check("disk", OK if writable else WARN, f"{free >> 20} MB free at {probe}"
                 + ("" if writable else " (not writable by this user)"),
                 "" if writable else f"make {path} writable by the service user")


def check_service() -> Check:
    if not shutil.which("systemctl") or not Path("/run/systemd/system").is_dir():
        return Check("service", WARN, "systemd is not running here",
                     "on the Pi: sudo make install-device")
    r = subprocess.run(["systemctl", "is-active", "coral-classifier"], capture_output=True,
                       text=True)
    state = r.stdout.strip() or "not installed"
    return Check("service", OK if state == "active" else WARN, f"coral-classifier: {state}",
                 "" if state == "active" else "sudo systemctl enable --now coral-classifier; "
                 "journalctl -u coral-classifier for why it stopped")


def check_update(cfg: Config) -> Check:
    """Pull updates: signed (update.public_key readable) or the unsigned opt-out, flagged."""
    u = cfg.update
    if not u.enabled:
        return Check("pull updates", OK, "off (update.enabled = false)")
    if u.public_key:
        from device.daemon.envelope import load_public_key
        from device.errors import CoralError

        try:
            load_public_key(u.public_key)
        except (CoralError, ValueError, OSError, ImportError) as exc:
            return Check("pull updates", FAIL, f"update.public_key cannot be read: {exc}",
                         "give the keys/update.pub that `make keys` wrote (a PEM path or "
                         "its base64)")
    if u.allow_unsigned:
        return Check("pull updates", WARN, "unsigned updates accepted (update.allow_unsigned"
                     " = true): anyone who may publish cmd/update can install any model",
                     "make keys on the workstation, then sudo make install-device "
                     "UPDATE_PUBLIC_KEY=/path/to/update.pub (sets update.public_key and "
                     "allow_unsigned = false)")
    if not u.public_key:
        return Check("pull updates", WARN, "every cmd/update is refused: no update."
                     "public_key and signing is on", "make keys, then sudo make "
                     "install-device UPDATE_PUBLIC_KEY=/path/to/update.pub")
    return Check("pull updates", OK, "signed updates only (update.public_key)")
