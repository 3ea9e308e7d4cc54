"""The model bundle: the contract between host_training (writes it) and the device (reads it).

A bundle is a folder::

    manifest.json                 name, version, labels, input spec, sha256 of every file
    labels.txt                    one label per line, line number = class id
    model_quant.tflite            full-integer model for the CPU runtime
    model_quant_edgetpu.tflite    optional: the same model compiled by edgetpu_compiler
    ...                           anything else listed in manifest["files"] (report, golden/)

The device verifies every listed sha256 on load and refuses a bundle that does not match,
so a half-copied deploy can never start serving.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from device.errors import ModelError

MANIFEST = "manifest.json"
LABELS = "labels.txt"
CPU_MODEL = "model_quant.tflite"
TPU_MODEL = "model_quant_edgetpu.tflite"
FORMAT_VERSION = 1
RESIZE_POLICIES = ("stretch", "center_crop", "letterbox")

_LABEL_LINE = re.compile(r"^\s*(\d{1,9})\s*[:\s]\s*(.*\S)\s*$")
MAX_LABELS = 65536  # far beyond any classifier head; bounds memory for a hostile file
MAX_LABEL_CHARS = 200


@dataclass(frozen=True)
class InputSpec:
    """How frames must be prepared for this model; training and the device share it."""

    width: int
    height: int
    channels: int = 3
    resize: str = "stretch"
    colour_order: str = "RGB"
    dtype: str = "uint8"


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified model bundle (or a bare .tflite wrapped as one)."""

    root: Path
    name: str
    version: str
    sha256: str  # of the CPU model: identifies the model in status and results
    labels: tuple[str, ...]
    cpu_model: Path
    tpu_model: Path | None
    input: InputSpec | None  # None for a bare .tflite: taken from the interpreter
    manifest: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    outputs: tuple[str, ...] = ("scores",)  # names of the model's output tensors, in order

    def model_for(self, backend: str) -> Path:
        """The file the given backend ('cpu' or 'edgetpu') should load."""
        if backend == "edgetpu":
            if self.tpu_model is None:
                raise ModelError(
                    f"bundle {self.root} has no Edge TPU model ({TPU_MODEL}): compile it with "
                    "`coral-train compile` on an x86-64 Linux host, or use backend = \"cpu\""
                )
            return self.tpu_model
        return self.cpu_model


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def parse_labels(text: str) -> tuple[str, ...]:
    """Parse a labels file in any of the three formats found in the wild.

    Plain lines (line number = id), ``id label`` and ``id:label``. A file is read as
    id-prefixed only when every non-blank line is, so a plain label such as
    ``2 of hearts`` is not mistaken for an id. Missing ids become ``"<id>"``.
    """
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    nonblank = [ln for ln in lines if ln.strip()]
    matches = [_LABEL_LINE.match(ln) for ln in nonblank]
    if nonblank and all(matches):
        by_id = {int(m.group(1)): m.group(2) for m in matches if m}
        if len(by_id) != len(matches):
            raise ModelError("labels file repeats an id: each id must appear once")
        if max(by_id) >= MAX_LABELS:
            raise ModelError(f"labels file has id {max(by_id)}: ids must be below {MAX_LABELS} "
                             "(line number = class id of the model's output)")
        labels = tuple(by_id.get(i, str(i)) for i in range(max(by_id) + 1))
    else:
        labels = tuple(ln.strip() for ln in lines)
    if len(labels) > MAX_LABELS:
        raise ModelError(f"labels file has {len(labels)} lines: at most {MAX_LABELS}")
    long = next((lb for lb in labels if len(lb) > MAX_LABEL_CHARS), None)
    if long is not None:
        raise ModelError(f"label {long[:40]!r}... is longer than {MAX_LABEL_CHARS} characters")
    return labels


def read_labels(path: Path) -> tuple[str, ...]:
    try:
        labels = parse_labels(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"labels file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"labels file {path} cannot be read as UTF-8 text: {exc}") from None
    if not labels:
        raise ModelError(f"labels file {path} is empty: write one label per line")
    return labels


def load_bundle(path: str | Path, labels: str | Path | None = None) -> Bundle:
    """Load a bundle folder, or wrap a bare .tflite (+ labels) as one.

    Raises ModelError naming the missing or mismatching file.
    """
    path = Path(path)
    if path.is_dir():
        return _load_folder(path)
    if path.is_file():
        return _load_bare(path, Path(labels) if labels else None)
    raise ModelError(
        f"model {path} not found: give a bundle folder (made by `coral-train train`) "
        "or a .tflite file"
    )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    bytes: int | None = Field(None, ge=0)


class InputSection(_Strict):
    width: int = Field(ge=1, le=4096)
    height: int = Field(ge=1, le=4096)
    channels: Literal[3] = 3
    resize: Literal["stretch", "center_crop", "letterbox"] = "stretch"
    colour_order: Literal["RGB", "BGR"] = "RGB"
    dtype: Literal["uint8", "int8"] = "uint8"


class Golden(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    file: str = Field(min_length=1)
    label: str = Field(min_length=1)


class Manifest(BaseModel):
    """The manifest as a schema: validated before anything in it is used. Sections the
    device does not read (metrics, training, report data) pass through."""

    model_config = ConfigDict(extra="allow", frozen=True)
    format: int = Field(FORMAT_VERSION, ge=1, le=FORMAT_VERSION)
    name: str = Field("", max_length=100)
    version: str = Field("0", min_length=1, max_length=64)
    labels: list[str] | None = None
    input: InputSection
    outputs: list[str] = Field(default_factory=lambda: ["scores"], min_length=1, max_length=4)
    files: dict[str, FileEntry] = Field(min_length=1)
    golden: list[Golden] = Field(default_factory=list, max_length=1000)


def _manifest_error(path: Path, err: ValidationError) -> ModelError:
    problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '(top)'}: {e['msg']}"
                         for e in err.errors()[:5])
    return ModelError(f"{path} is not a valid bundle manifest ({problems}): rebuild the "
                      "bundle with `coral-train train` or fix these keys")


def _load_folder(root: Path) -> Bundle:
    manifest_path = root / MANIFEST
    try:
        raw = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise ModelError(
            f"{root} is not a model bundle: {MANIFEST} is missing (a bundle is written by "
            "`coral-train train`; for a bare model give the .tflite file and labels)"
        ) from None
    except (OSError, ValueError, RecursionError) as exc:
        raise ModelError(f"{manifest_path} is not valid JSON: {exc}") from None
    try:
        m = Manifest.model_validate(raw)
    except ValidationError as err:
        raise _manifest_error(manifest_path, err) from None
    verify_files(root, {k: v.model_dump() for k, v in m.files.items()})
    if CPU_MODEL not in m.files:
        raise ModelError(f"bundle {root} lists no {CPU_MODEL}: rebuild the bundle")
    for g in m.golden:
        if g.file not in m.files:
            raise ModelError(f"{manifest_path}: golden sample {g.file!r} is not listed in "
                             "'files' (so it is not checksummed): rebuild the bundle")
    labels = read_labels(root / LABELS)
    if m.labels is not None and tuple(m.labels) != labels:
        raise ModelError(f"{root / LABELS} disagrees with the labels in {MANIFEST}")
    unknown_golden = {g.label for g in m.golden} - set(labels)
    if unknown_golden:
        raise ModelError(f"{manifest_path}: golden labels {sorted(unknown_golden)} are not "
                         "among the model's labels")
    i = m.input
    spec = InputSpec(i.width, i.height, i.channels, i.resize, i.colour_order, i.dtype)
    tpu = root / TPU_MODEL if TPU_MODEL in m.files else None
    return Bundle(
        root=root,
        name=m.name or root.name,
        version=m.version,
        sha256=m.files[CPU_MODEL].sha256,
        labels=labels,
        cpu_model=root / CPU_MODEL,
        tpu_model=tpu,
        input=spec,
        manifest=raw,
        outputs=tuple(m.outputs),
    )


def verify_files(root: Path, files: dict[str, Any]) -> None:
    """Check every listed file exists and has its recorded sha256."""
    for name, info in files.items():
        f = (root / name).resolve()
        if root.resolve() not in f.parents:
            raise ModelError(f"bundle {root}: file entry {name!r} points outside the bundle")
        if not f.is_file():
            raise ModelError(f"bundle {root}: {name} is listed in {MANIFEST} but missing")
        want = info.get("sha256") if isinstance(info, dict) else None
        if not want:
            raise ModelError(f"bundle {root}: {name} has no sha256 in {MANIFEST}")
        got = sha256_file(f)
        if got != want:
            raise ModelError(
                f"bundle {root}: {name} does not match its sha256 in {MANIFEST} "
                f"(expected {want[:12]}…, got {got[:12]}…): the copy is incomplete or the "
                "file was changed; deploy the bundle again"
            )


def _load_bare(model: Path, labels: Path | None) -> Bundle:
    if model.suffix != ".tflite":
        raise ModelError(f"model {model} is not a .tflite file or a bundle folder")
    if labels is None:
        guess = [model.with_name(LABELS), model.with_suffix(".txt")]
        labels = next((g for g in guess if g.is_file()), None)
    label_tuple = read_labels(labels) if labels else ()
    digest = sha256_file(model)
    return Bundle(
        root=model.parent,
        name=model.stem.removesuffix("_edgetpu"),
        version=digest[:12],
        sha256=digest,
        labels=label_tuple,
        cpu_model=model,
        tpu_model=model,  # a bare file is what the user chose: load it on either backend
        input=None,
    )


def write_manifest(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Record the sha256 of every file under root (except the manifest) and write it.

    Used by the trainer and by `compile`, so the hashing rule lives in one place.
    """
    root = Path(root)
    files = {}
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = f.relative_to(root).as_posix()
        files[rel] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    out = {
        "format": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **manifest,
        "files": files,
    }
    try:
        Manifest.model_validate(out)
    except ValidationError as err:
        raise _manifest_error(root / MANIFEST, err) from None
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(root / MANIFEST)
    return out
