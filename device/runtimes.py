"""TFLite interpreters for the CPU and the Edge TPU; the only place runtimes are imported.

The fallback chain is written once: pycoral (Coral's apt package on the Pi) →
ai_edge_litert → tflite_runtime. None of them is imported at module load, so
`import device` works on any machine.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
from typing import Any

from device.errors import BackendError, ModelError

log = logging.getLogger(__name__)

EDGETPU_LIB = "libedgetpu.so.1"
RUNTIMES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
# For the Edge TPU, tflite_runtime first: community libedgetpu builds target a matching
# tflite-runtime (device/tools/pairing.py); no libedgetpu is built for LiteRT yet.
EDGETPU_RUNTIMES = ("tflite_runtime.interpreter", "ai_edge_litert.interpreter")

_NO_TPU_HELP = (
    "Is the USB accelerator plugged in (a USB 3 port), or the M.2/PCIe card seated with "
    "the gasket/apex driver loaded, and is the udev rule installed (systemd/99-coral.rules)? "
    "Run `coral-classifier doctor` for a full check."
)


def interpreter_module(order: tuple[str, ...] = RUNTIMES) -> tuple[Any, str]:
    """The first importable TFLite runtime module and its name."""
    errors = []
    for name in order:
        try:
            return importlib.import_module(name), name.split(".")[0]
        except (ImportError, SystemError, ValueError) as exc:
            # SystemError/ValueError: a wheel built for numpy 1 under numpy 2 (tflite-runtime
            # 2.14 raises SystemError at import or first use)
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    raise BackendError(
        "no TFLite runtime is installed: `pip install ai-edge-litert` (or tflite-runtime "
        "with numpy<2). Tried: " + "; ".join(errors)
    )


def _open(factory, model_path: str, **kwargs):
    try:
        interpreter = factory(model_path=model_path, **kwargs)
        interpreter.allocate_tensors()
    except SystemError as exc:
        raise BackendError(
            f"the TFLite runtime fails under numpy {_numpy_version()} ({exc}): tflite-runtime "
            "wheels up to 2.14 need numpy<2; `pip install 'numpy<2'` in the daemon's venv, "
            "or use ai-edge-litert for the CPU") from None
    except ValueError as exc:
        raise ModelError(
            f"{model_path} is not a valid TFLite model ({exc}): the file is corrupt or "
            "truncated; copy or re-export it"
        ) from None
    except RuntimeError as exc:
        if "edgetpu-custom-op" in str(exc):
            raise ModelError(
                f"{model_path} is compiled for the Edge TPU and cannot run on the CPU: use "
                "the uncompiled model_quant.tflite, or backend = \"edgetpu\""
            ) from None
        raise ModelError(f"{model_path} cannot be prepared by the runtime: {exc}") from None
    return interpreter


def cpu_interpreter(model_path: str, num_threads: int = 2):
    """A CPU interpreter (XNNPACK where the runtime has it)."""
    module, name = interpreter_module()
    log.info("CPU backend: %s with %d threads", name, num_threads)
    return _open(module.Interpreter, model_path, num_threads=num_threads), name


def edgetpu_interpreter(model_path: str, device: str = ""):
    """An interpreter with the Edge TPU delegate; BackendError explains what is missing."""
    try:
        from pycoral.utils import edgetpu  # type: ignore[import-not-found]
    except ImportError:
        edgetpu = None
    if edgetpu is not None:
        if not edgetpu.list_edge_tpus():
            raise BackendError("no Edge TPU found. " + _NO_TPU_HELP)
        try:
            interpreter = edgetpu.make_interpreter(model_path, device=device or None)
            interpreter.allocate_tensors()
        except ValueError as exc:
            raise BackendError(f"the Edge TPU {device or ''} cannot be opened ({exc}). "
                               + _NO_TPU_HELP) from None
        except RuntimeError as exc:
            raise ModelError(f"{model_path} cannot run on the Edge TPU: {exc}") from None
        return interpreter, "pycoral"

    module, name = interpreter_module(EDGETPU_RUNTIMES)
    options = {"device": device} if device else {}
    try:
        # Load the library ourselves first: when it is missing, load_delegate leaves a
        # half-built Delegate whose __del__ prints a traceback at exit (ai_edge_litert 2.x).
        ctypes.CDLL(EDGETPU_LIB)
        delegate = module.load_delegate(EDGETPU_LIB, options)
    except OSError as exc:  # the library itself is missing
        raise BackendError(
            f"{EDGETPU_LIB} is not installed ({exc}): add Coral's apt repository and "
            "`sudo apt-get install libedgetpu1-std`. " + _NO_TPU_HELP
        ) from None
    except ValueError as exc:  # the library loaded but found no device
        raise BackendError(f"no Edge TPU found ({exc}). " + _NO_TPU_HELP) from None
    return _open(module.Interpreter, model_path, experimental_delegates=[delegate]), name



def _numpy_version() -> str:
    import numpy

    return numpy.__version__
