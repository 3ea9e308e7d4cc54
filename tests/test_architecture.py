"""The architecture the README draws: device never needs host_training or TensorFlow, and
modules stay small enough to hold in one's head."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE = ROOT / "device"
MAX_LINES = 300
MAX_FUNCTION_LINES = 60

BLOCKER = """
import importlib, importlib.abc, pkgutil, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("host_training", "tensorflow", "keras"):
            raise ImportError(f"device must not import {name}")
        return None
sys.meta_path.insert(0, Block())
import device
names = [m.name for m in pkgutil.walk_packages(device.__path__, "device.")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def device_modules() -> list[Path]:
    return sorted(p for p in DEVICE.rglob("*.py"))


def test_every_device_module_imports_without_host_training_or_tensorflow():
    out = subprocess.run([sys.executable, "-c", BLOCKER], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip()) == len(device_modules()) - 1  # minus device/__init__.py


def test_device_modules_stay_small():
    big = {str(p.relative_to(ROOT)): n for p in device_modules()
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"split these modules (over {MAX_LINES} lines): {big}"


def test_subpackages_depend_one_way():
    """cameras and mqtt never reach into the daemon; tools may use everything."""
    for sub, forbidden in (("cameras", ("device.daemon", "device.mqtt", "device.tools")),
                           ("mqtt", ("device.daemon", "device.tools", "device.cameras"))):
        for p in (DEVICE / sub).glob("*.py"):
            text = p.read_text()
            for f in forbidden:
                assert f"from {f}" not in text and f"import {f}" not in text, (p, f)


def module_name(p: Path) -> str:
    name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports_of(p: Path, modules: set[str]) -> set[str]:
    """Every device module p imports: at the top, under TYPE_CHECKING, inside functions."""
    found = set()
    for node in ast.walk(ast.parse(p.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != "device":
                found.add(name)
    found.discard(module_name(p))
    return found


def test_no_import_cycles_in_device_type_checking_and_lazy_imports_included():
    files = {module_name(p): p for p in device_modules()}
    graph = {m: imports_of(p, set(files)) for m, p in files.items()}
    # the package __init__s import nothing back; a module that imports a package's
    # __init__ (device.config) depends on what it re-exports
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles))[:10])


def test_nothing_but_the_lifecycle_reaches_into_the_daemon():
    """The Daemon is no hub: other modules get what they use passed in explicitly. Only
    the lifecycle (and the entry point that runs it, and the bench harness that measures
    it) may name it."""
    allowed = {"device/daemon/lifecycle.py", "device/__main__.py", "device/tools/bench.py",
               "device/tools/bench_regions.py", "device/tools/bench_web.py"}
    for p in device_modules():
        rel = str(p.relative_to(ROOT))
        if rel in allowed:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            assert not (isinstance(node, ast.ImportFrom)
                        and node.module == "device.daemon.lifecycle"), rel
            assert not (isinstance(node, ast.Name) and node.id == "Daemon"), rel


def test_functions_stay_short():
    long = {}
    for p in device_modules():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{p.relative_to(ROOT)}:{node.name}"] = n
    assert not long, f"split these functions (over {MAX_FUNCTION_LINES} lines): {long}"
