"""Which TensorFlow a libedgetpu was built against, which TensorFlow the interpreter is,
and whether the two may meet in one process (pure, so doctor and its tests share it).

libedgetpu is a TFLite delegate compiled against one TensorFlow's internal ABI. Coral's
last apt package, libedgetpu1-std 16.0, is built against TF 2.5 (libedgetpu's
workspace.bzl on its release branch) and pairs with tflite-runtime 2.5.0.post1
(python3-tflite-runtime / python3-pycoral, Python <= 3.9: not installable on Bookworm,
google-coral/pycoral#133). Loaded into tflite-runtime >= 2.12 it segfaults
(google-coral/edgetpu#812, #821, #841; google-coral/libedgetpu#67), and ai-edge-litert
needs a libedgetpu rebuilt for it (google-ai-edge/LiteRT#3611). Community builds name the
TensorFlow in their version: feranick/libedgetpu's debian/changelog lists 16.0tf2.15.0,
16.0tf2.16.1, 16.0tf2.17.0, 16.0tf2.17.1 and 16.0tf2.18.1, with matching tflite-runtime
wheels for Python 3.11 on aarch64 from feranick/TFlite-builds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CORAL_16_TF = "2.5"  # what Coral's own 16.0 package was built against

ROUTES = (
    "(a) native: install a libedgetpu built for your tflite-runtime's TensorFlow and that "
    "tflite-runtime wheel (e.g. libedgetpu1-std 16.0tf2.17.1 with tflite_runtime 2.17.1 for "
    "Python 3.11 aarch64): `sudo make install-device LIBEDGETPU_DEB=<file or URL> "
    "TFLITE_WHEEL=<file or URL>`; or (b) the same pairing inside the arm64 container (see "
    "the README's container section). Never apt install python3-pycoral on Bookworm."
)


@dataclass(frozen=True)
class Pairing:
    ok: bool
    detail: str
    fix: str = ""


def libedgetpu_tf(package_version: str) -> str | None:
    """The TensorFlow major.minor a libedgetpu package was built against.

    '16.0tf2.17.1-1' -> '2.17'; Coral's '16.0' (or '16.0-1') -> '2.5'; unknown -> None.
    """
    v = package_version.strip()
    m = re.search(r"tf(\d+)\.(\d+)", v)
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    if re.fullmatch(r"16\.0(-\d+)?", v):
        return CORAL_16_TF
    return None


def interpreter_tf(name: str, version: str) -> str | None:
    """The TensorFlow major.minor of a TFLite interpreter package (None for LiteRT, whose
    versions do not name one)."""
    if name in ("tflite_runtime", "tflite-runtime"):
        m = re.match(r"(\d+)\.(\d+)", version)
        return f"{m.group(1)}.{m.group(2)}" if m else None
    return None


def check_pairing(libedgetpu_version: str | None, interpreters: dict[str, str]) -> Pairing:
    """Can the Edge TPU delegate load into the interpreter the daemon uses for it?

    `interpreters` maps importable runtime module names to versions; the daemon prefers
    tflite_runtime for the Edge TPU (the runtime community libedgetpu builds target).
    """
    if not libedgetpu_version:
        return Pairing(False, "libedgetpu's package version is unknown (not installed from a "
                       ".deb?): its TensorFlow cannot be checked", ROUTES)
    lib_tf = libedgetpu_tf(libedgetpu_version)
    if "tflite_runtime" in interpreters:
        tfr = interpreters["tflite_runtime"]
        run_tf = interpreter_tf("tflite_runtime", tfr)
        if lib_tf is not None and lib_tf == run_tf:
            return Pairing(True, f"libedgetpu {libedgetpu_version} (TF {lib_tf}) with "
                           f"tflite_runtime {tfr}")
        return Pairing(False, f"libedgetpu {libedgetpu_version} is built for TF "
                       f"{lib_tf or '?'} but tflite_runtime is {tfr} (TF {run_tf or '?'}): "
                       "loading the delegate crashes the process", ROUTES)
    if "ai_edge_litert" in interpreters:
        return Pairing(False, f"only ai_edge_litert {interpreters['ai_edge_litert']} is "
                       f"installed; libedgetpu {libedgetpu_version} (TF {lib_tf or '?'}) is "
                       "not built for LiteRT (google-ai-edge/LiteRT#3611): the Edge TPU "
                       "delegate would crash the process; the CPU backend is fine", ROUTES)
    return Pairing(False, "no TFLite interpreter is installed", ROUTES)
