"""The one wrapper around `edgetpu_compiler`: version check, timeout, report parsing.

The compiler exists only for x86-64 Linux (Coral's apt repository) and has not changed
since 2021; where it is missing we say how to get it and fall back to the offline analysis.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from device.bundle import CPU_MODEL, MANIFEST, TPU_MODEL, write_manifest
from device.errors import CoralError

log = logging.getLogger(__name__)

INSTALL_HELP = (
    "edgetpu_compiler is not installed. It runs on x86-64 Linux only: add Coral's apt "
    "repository (https://coral.ai/docs/edgetpu/compiler/) and `sudo apt-get install "
    "edgetpu-compiler`. On macOS or an ARM host, run it in an x86-64 Linux container "
    "(e.g. `docker run --platform linux/amd64 debian:bookworm`) with the same package. "
    "Meanwhile `coral-train check-edgetpu` predicts what will run on the TPU."
)
MIN_VERSION = 16


class CompileError(CoralError):
    exit_code = 3


@dataclass
class CompileReport:
    compiler_version: str = ""
    tpu_ops: int | None = None
    cpu_ops: int | None = None
    subgraphs: int | None = None
    total_ops: int | None = None
    on_chip_memory: str = ""
    off_chip_memory: str = ""
    on_chip_remaining: str = ""
    operators: list[dict] = field(default_factory=list)


_PATTERNS = {
    "compiler_version": r"Edge TPU Compiler version (\S+)",
    "on_chip_memory": r"On-chip memory used for caching model parameters: (\S+)",
    "on_chip_remaining": r"On-chip memory remaining for caching model parameters: (\S+)",
    "off_chip_memory": r"Off-chip memory used for streaming uncached model parameters: (\S+)",
    "subgraphs": r"Number of Edge TPU subgraphs: (\d+)",
    "total_ops": r"Total number of operations: (\d+)",
    "tpu_ops": r"Number of operations that will run on Edge TPU: (\d+)",
    "cpu_ops": r"Number of operations that will run on CPU: (\d+)",
}
_OPERATOR_ROW = re.compile(r"^([A-Z][A-Z0-9_]+)\s+(\d+)\s+(\S.*?)\s*$")


def parse_report(text: str) -> CompileReport:
    """Parse the compiler's stdout (with --show_operations) into a CompileReport."""
    r = CompileReport()
    for key, pat in _PATTERNS.items():
        m = re.search(pat, text)
        if m:
            setattr(r, key, int(m.group(1)) if key in ("subgraphs", "total_ops", "tpu_ops",
                                                        "cpu_ops") else m.group(1))
    if r.tpu_ops is None and r.total_ops is not None and "not all operations" not in text:
        r.tpu_ops, r.cpu_ops = r.total_ops, 0  # the compiler omits the split when all map
    in_table = False
    for line in text.splitlines():
        if line.startswith("Operator") and "Status" in line:
            in_table = True
            continue
        m = _OPERATOR_ROW.match(line) if in_table else None
        if m:
            r.operators.append({"op": m.group(1), "count": int(m.group(2)),
                                "status": m.group(3)})
    return r


def find_compiler() -> str | None:
    return shutil.which("edgetpu_compiler")


def compiler_version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    m = re.search(r"version (\S+)", out.stdout + out.stderr)
    if not m:
        raise CompileError(f"{exe} --version printed no version: is it Coral's compiler?")
    return m.group(1)


def run_compiler(exe: str, model: Path, timeout: int = 600) -> tuple[Path, CompileReport]:
    """Compile model into a temporary folder; returns (compiled file, report)."""
    version = compiler_version(exe)
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    if major < MIN_VERSION:
        raise CompileError(f"edgetpu_compiler {version} is older than {MIN_VERSION}: upgrade "
                           "`edgetpu-compiler` from Coral's apt repository")
    out_dir = Path(tempfile.mkdtemp(prefix="edgetpu-"))
    cmd = [exe, "--out_dir", str(out_dir), "--show_operations", "--timeout_sec", str(timeout),
           str(model)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        raise CompileError(f"edgetpu_compiler did not finish in {timeout} s") from None
    compiled = out_dir / f"{model.stem}_edgetpu.tflite"
    if proc.returncode != 0 or not compiled.is_file():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise CompileError(f"edgetpu_compiler failed on {model} (exit {proc.returncode}): "
                           + " | ".join(tail))
    report = parse_report(proc.stdout)
    report.compiler_version = report.compiler_version or version
    return compiled, report


def compile_model(target: Path, timeout: int = 600) -> dict:
    """`coral-train compile`: compile a bundle (updating its manifest) or a bare .tflite."""
    from host_training.edgetpu.edgetpu_check import analyse, format_report
    from host_training.train.tflite_model import load_tflite

    target = Path(target)
    is_bundle = target.is_dir()
    source = target / CPU_MODEL if is_bundle else target
    if not source.is_file():
        raise CompileError(f"{source} not found: give a bundle folder or a .tflite file")
    analysis = analyse(load_tflite(source))
    exe = find_compiler()
    if exe is None:
        log.warning("%s", INSTALL_HELP)
        print(format_report(analysis))
        return {"compiled": False, "analysis": analysis}
    compiled, report = run_compiler(exe, source, timeout)
    dest = target / TPU_MODEL if is_bundle else source.with_name(f"{source.stem}_edgetpu.tflite")
    shutil.move(str(compiled), dest)
    shutil.rmtree(compiled.parent, ignore_errors=True)
    if is_bundle:
        manifest = json.loads((target / MANIFEST).read_text())
        manifest["edgetpu"] = {**asdict(report), "predicted_cpu_ops": analysis["cpu_ops"]}
        manifest.pop("files", None)
        write_manifest(target, manifest)
    log.info("compiled %s -> %s: %s ops on the Edge TPU, %s on the CPU", source, dest,
             report.tpu_ops, report.cpu_ops)
    return {"compiled": True, "output": str(dest), "report": asdict(report),
            "analysis": analysis}
