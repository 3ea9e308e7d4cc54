"""`coral-classifier doctor`: what is wrong with this setup, and how to fix it.

Most Coral projects fail on setup, not code: runtime wheels missing for the Pi's Python,
libedgetpu not matching the runtime, no udev rule, the service user outside the camera's
group, picamera2 invisible inside a venv, a model compiled for a newer runtime. Each check
here says ✔, ! (works, but look) or ✘ (blocks running) and, for each problem, the fix.
"""

from __future__ import annotations

import ctypes
import grp
import importlib
import importlib.metadata
import importlib.util
import json
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from device.cameras.picamera2 import import_picamera2
from device.config import Config
from device.errors import CameraError
from device.tools.doctor_checks import (
    FAIL,
    OK,
    WARN,
    Check,
    check_broker,
    check_disk,
    check_model,
    check_service,
    check_update,
)
from device.tools.pairing import ROUTES, check_pairing

MARK = {OK: "✔", WARN: "!", FAIL: "✘"}
USB_IDS = {("1a6e", "089a"): "Coral USB Accelerator (before firmware load)",
           ("18d1", "9302"): "Coral USB Accelerator"}

def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_python() -> Check:
    v = sys.version_info
    if v >= (3, 11):
        return Check("python", OK, f"Python {v.major}.{v.minor}.{v.micro}")
    return Check("python", FAIL, f"Python {v.major}.{v.minor}",
                 "use Python 3.11 or newer (Raspberry Pi OS Bookworm ships 3.11)")


def check_runtimes(needs_tpu: bool) -> list[Check]:
    out = []
    found = {}
    for module, dist in (("pycoral", "pycoral"), ("tflite_runtime", "tflite-runtime"),
                         ("ai_edge_litert", "ai-edge-litert")):
        try:
            importlib.import_module(module)
            found[module] = _version(dist) or "installed"
        except Exception as exc:  # a broken wheel raises anything, not only ImportError
            if _version(dist):
                out.append(Check(f"runtime {module}", FAIL, f"installed but fails to import: "
                                 f"{exc}", f"reinstall {dist} for this Python"))
    if found:
        out.append(Check("TFLite runtimes", OK, ", ".join(f"{k} {v}" for k, v in found.items())))
    else:
        out.append(Check("TFLite runtimes", FAIL, "none importable",
                         "pip install ai-edge-litert (in the daemon's venv)"))
    if "pycoral" not in found and needs_tpu:
        out.append(Check("pycoral", OK, "not installed (not needed): the Edge TPU is used "
                         "through tflite-runtime with libedgetpu's delegate; python3-pycoral "
                         "cannot install on Bookworm (Python <= 3.9) and the PyPI package "
                         "named pycoral is unrelated"))
    import numpy

    tfr = _version("tflite-runtime")
    if tfr and tfr.startswith("2.14") and int(numpy.__version__.split(".")[0]) >= 2:
        out.append(Check("numpy", FAIL, f"numpy {numpy.__version__} with tflite-runtime {tfr}: "
                         "its Interpreter fails with numpy 2",
                         "pip install 'numpy<2', or use ai-edge-litert instead"))
    else:
        out.append(Check("numpy", OK, f"numpy {numpy.__version__}"))
    return out


def libedgetpu_version() -> str | None:
    """The installed libedgetpu package's version ('16.0', '16.0tf2.17.1-1'), if any."""
    if not shutil.which("dpkg-query"):
        return None
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}\n", "libedgetpu1-std",
                        "libedgetpu1-max"], capture_output=True, text=True)
    versions = [v for v in r.stdout.split() if v]
    return versions[0] if versions else None


def check_libedgetpu(needs_tpu: bool) -> list[Check]:
    try:
        ctypes.CDLL("libedgetpu.so.1")
    except OSError:
        return [Check("libedgetpu", FAIL if needs_tpu else WARN, "libedgetpu.so.1 not found",
                      "install a libedgetpu built for your TFLite runtime: " + ROUTES)]
    version = libedgetpu_version()
    out = [Check("libedgetpu", OK, f"libedgetpu.so.1 loads ({version or 'version unknown'})")]
    interpreters = {}
    for module, dist in (("tflite_runtime", "tflite-runtime"), ("ai_edge_litert",
                                                                 "ai-edge-litert")):
        if importlib.util.find_spec(module) is not None:
            interpreters[module] = _version(dist) or "?"
    pairing = check_pairing(version, interpreters)
    out.append(Check("Edge TPU runtime pairing", OK if pairing.ok else
                     (FAIL if needs_tpu else WARN), pairing.detail, pairing.fix))
    return out


def check_devices(needs_tpu: bool, sys_root: Path = Path("/")) -> Check:
    found = []
    usb = sys_root / "sys" / "bus" / "usb" / "devices"
    for dev in usb.glob("*") if usb.is_dir() else []:
        try:
            ids = ((dev / "idVendor").read_text().strip(), (dev / "idProduct").read_text().strip())
        except OSError:
            continue
        if ids in USB_IDS:
            found.append(f"{USB_IDS[ids]} {':'.join(ids)} at {dev.name}")
    if (sys_root / "dev" / "apex_0").exists():
        found.append("PCIe/M.2 Coral /dev/apex_0")
    if found:
        return Check("Edge TPU devices", OK, "; ".join(found))
    return Check("Edge TPU devices", FAIL if needs_tpu else WARN, "none found",
                 "plug the USB accelerator into a USB 3 port, or for the M.2/PCIe card install "
                 "gasket-dkms and reboot; `lsusb` should show 1a6e:089a or 18d1:9302")


def check_pi5_pcie(sys_root: Path = Path("/"), page_size: int | None = None,
                   kernel: str | None = None) -> Check | None:
    """A PCIe/M.2 Coral on a Raspberry Pi 5 needs more than the driver: the 4K-page kernel
    (the default kernel_2712 uses 16K pages, which gasket/apex do not support), the
    pcie-32bit-dma / MSI overlay in config.txt, and a gasket-dkms that builds: 1.0-18
    fails on 6.12 kernels (raspberrypi/linux#6799), so it is built from a patched source."""
    model = sys_root / "proc" / "device-tree" / "model"
    try:
        if "Raspberry Pi 5" not in model.read_text(errors="replace"):
            return None
    except OSError:
        return None
    if (sys_root / "dev" / "apex_0").exists():
        return None
    page_size = page_size or os.sysconf("SC_PAGE_SIZE")
    kernel = kernel or os.uname().release
    problems = []
    if page_size != 4096:
        problems.append(f"{page_size // 1024}K-page kernel: add `kernel=kernel8.img` to "
                        "/boot/firmware/config.txt")
    problems.append("`dtoverlay=pcie-32bit-dma-pi5` and `dtoverlay=pciex1-compat-pi5,"
                    "no-mip` in /boot/firmware/config.txt (MSI)")
    major_minor = tuple(int(x) for x in kernel.split(".")[:2] if x.isdigit())
    if major_minor >= (6, 12):
        problems.append(f"kernel {kernel}: Coral's gasket-dkms 1.0-18 does not build on 6.12+ "
                        "(raspberrypi/linux#6799); build gasket from a source patched for it")
    return Check("Pi 5 PCIe Coral", WARN, "no /dev/apex_0 on a Raspberry Pi 5",
                 "; ".join(problems) + "; then reboot")


def check_udev(sys_root: Path = Path("/")) -> Check:
    for d in ("etc/udev/rules.d", "lib/udev/rules.d", "usr/lib/udev/rules.d"):
        for f in (sys_root / d).glob("*.rules") if (sys_root / d).is_dir() else []:
            try:
                text = f.read_text(errors="replace")
            except OSError:
                continue
            if "1a6e" in text and "18d1" in text:
                return Check("udev rule", OK, str(f))
    return Check("udev rule", WARN, "no rule for the Coral USB IDs 1a6e:089a / 18d1:9302",
                 "sudo cp systemd/99-coral-edgetpu.rules /etc/udev/rules.d/ && sudo udevadm "
                 "control --reload-rules (make install-device does this)")


def check_groups(user: str) -> Check:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return Check("groups", WARN, f"user {user} does not exist",
                     "sudo make install-device creates the service user")
    names = {g.gr_name for g in grp.getgrall() if user in g.gr_mem}
    names.add(grp.getgrgid(entry.pw_gid).gr_name)
    wanted = [g for g in ("video", "plugdev", "apex") if _group_exists(g)]
    missing = [g for g in wanted if g not in names]
    if user == "root" or not missing:
        return Check("groups", OK, f"{user}: {', '.join(sorted(names & set(wanted))) or 'root'}")
    return Check("groups", WARN, f"{user} is not in {', '.join(missing)}",
                 f"sudo usermod -a -G {','.join(missing)} {user} (then log in again)")


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def check_cameras(cfg: Config | None) -> list[Check]:
    out = []
    cam = cfg.camera.type if cfg else ""  # without a config nothing is required yet
    try:
        import_picamera2()
        out.append(Check("picamera2", OK, "importable"))
    except CameraError as exc:
        status = FAIL if cam == "picamera2" else WARN
        text = str(exc)
        detail, _, fix = text.partition(" Fix: ")
        if not fix:
            detail, fix = text.split(" On Raspberry Pi OS: ")[0], text.partition(
                " On Raspberry Pi OS: ")[2] or "sudo apt install python3-picamera2"
        out.append(Check("picamera2", status, detail, fix))
    videos = sorted(str(p) for p in Path("/dev").glob("video*"))
    needs = cam == "opencv" and (cfg.camera.source or "0").isdigit() if cfg else False
    out.append(Check("video devices", OK if videos else (FAIL if needs else WARN),
                     ", ".join(videos) or "no /dev/video*",
                     "" if videos else "connect a camera (and enable it in raspi-config)"))
    return out


INSTALLED_CONFIG = Path("/etc/coral-classifier/config.toml")


def installed_config() -> Path | None:
    """The config `make install-device` installed ($CORAL_CLASSIFIER_CONFIG overrides),
    when it exists and this user may read it."""
    path = Path(os.environ.get("CORAL_CLASSIFIER_CONFIG") or INSTALLED_CONFIG)
    return path if path.is_file() and os.access(path, os.R_OK) else None


def config_check(given: str | None, used: Path | str | None) -> list[Check]:
    """Which config the broker, model and disk checks read, or why they are skipped."""
    if given:
        return [Check("config", OK, str(given))]
    if used:
        return [Check("config", OK, f"{used} (the installed config; --config for another)")]
    path = Path(os.environ.get("CORAL_CLASSIFIER_CONFIG") or INSTALLED_CONFIG)
    why = "cannot be read by this user" if path.exists() else "does not exist"
    fix = ("sudo coral-classifier doctor, or --config FILE" if path.exists() else
           "sudo make install-device installs it; or --config FILE")
    return [Check("config", WARN, f"{path} {why}: only this machine is checked, not the "
                  "MQTT server, model and disk a config names", fix)]


def run_checks(cfg: Config | None) -> list[Check]:
    needs_tpu = bool(cfg) and (cfg.model.backend == "edgetpu" or (
        cfg.model.backend == "auto" and not cfg.model.allow_cpu_fallback))
    checks = [check_python(), *check_runtimes(needs_tpu), *check_libedgetpu(needs_tpu),
              check_devices(needs_tpu), *filter(None, [check_pi5_pcie()]), check_udev(),
              check_groups(_service_user()), *check_cameras(cfg)]
    if cfg is not None:
        checks += [check_broker(cfg), *check_model(cfg, _installed_runtime()), check_disk(cfg),
                   check_update(cfg)]
    checks.append(check_service())
    return checks


def _service_user() -> str:
    try:
        pwd.getpwnam("coral-classifier")
        return "coral-classifier"
    except KeyError:
        return pwd.getpwuid(os.getuid()).pw_name


def _installed_runtime() -> int | None:
    try:
        from pycoral.utils import edgetpu  # type: ignore[import-not-found]
    except ImportError:
        return None
    text = edgetpu.get_runtime_version()  # "BuildLabel(...), RuntimeVersion(14)"
    digits = text.rsplit("RuntimeVersion(", 1)[-1].split(")")[0]
    return int(digits) if digits.isdigit() else None


def report(checks: list[Check], as_json: bool) -> tuple[str, int]:
    failed = any(c.status == FAIL for c in checks)
    if as_json:
        return json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}), int(failed)
    lines = []
    for c in checks:
        lines.append(f"{MARK[c.status]} {c.name}: {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"    fix: {c.fix}")
    lines.append("blocking problems found" if failed else "nothing blocks running")
    return "\n".join(lines), int(failed)
