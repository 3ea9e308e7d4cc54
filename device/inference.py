"""The Classifier interface, the TFLite classifier and the backend registry.

A Classifier turns an RGB frame into ranked classes. Backends (cpu, edgetpu) differ only
in how the interpreter is made; everything after that is one class.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from device import processing, runtimes
from device.bundle import Bundle
from device.errors import BackendError, ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Classification:
    """The outcome for one frame. JSON happens only in the publisher."""

    top_k: tuple[processing.Class, ...]
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float = 0.0

    @property
    def best(self) -> processing.Class | None:
        return self.top_k[0] if self.top_k else None


@dataclass(frozen=True)
class Postprocess:
    """Output tensor -> ranked classes for one model. Pure and bound to the model that
    produced the output, so it can run on another thread, even across a reload."""

    labels: tuple[str, ...]
    scale: float
    zero_point: int
    k: int
    min_score: float

    def __call__(self, raw: np.ndarray) -> tuple[processing.Class, ...]:
        return self.rank(processing.dequantize(raw, self.scale, self.zero_point))

    def rank(self, scores: np.ndarray) -> tuple[processing.Class, ...]:
        return processing.top_k(scores, self.labels, self.k, self.min_score)


@dataclass(frozen=True)
class Inference:
    """One invoke: a copy of the raw output and the time it took, not yet ranked.

    The daemon's inference thread stops here and hands this to the results thread, so
    Python work (ranking, deciding, JSON) never delays the next invoke."""

    raw: np.ndarray
    preprocess_ms: float
    inference_ms: float
    postprocess: Postprocess
    extra: tuple[np.ndarray, ...] = ()  # further outputs, dequantized (e.g. OOD similarities)

    @functools.cached_property
    def scores(self) -> np.ndarray:
        """The class output dequantized, once: ranking and judging both read it."""
        p = self.postprocess
        return processing.dequantize(self.raw, p.scale, p.zero_point).reshape(-1)

    def outputs(self) -> list[np.ndarray]:
        """Every output dequantized, in the model's order: what policy.judge() takes."""
        return [self.scores, *self.extra]

    def classify(self) -> Classification:
        t0 = time.perf_counter()
        ranked = self.postprocess.rank(self.scores)
        return Classification(ranked, self.preprocess_ms, self.inference_ms,
                              (time.perf_counter() - t0) * 1e3)


class Classifier(Protocol):
    backend: str
    bundle: Bundle

    def classify(self, rgb: np.ndarray) -> Classification: ...

    def close(self) -> None: ...


class TFLiteClassifier:
    """Classifies with any TFLite interpreter (CPU or Edge TPU delegate).

    The input tensor is filled in place. The daemon resizes in its capture thread
    (prepare(), into pooled buffers) so the resize overlaps inference, and ranks the
    output in its results thread (infer() here, Inference.classify() there); a direct
    classify() does all of it at once, resizing into a preallocated buffer.
    """

    def __init__(self, interpreter, bundle: Bundle, backend: str, runtime: str,
                 top_k: int = 3, min_score: float = 0.0):
        self.interpreter = interpreter
        self.backend = backend
        self.runtime = runtime
        self.k = top_k
        self.min_score = min_score
        inputs = interpreter.get_input_details()
        outputs = interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != len(bundle.outputs):
            if bundle.input is None:  # a bare .tflite: nothing says what a second output is
                raise ModelError(
                    f"{bundle.root}: the model has {len(inputs)} input(s) and {len(outputs)} "
                    "output(s); a bare .tflite is taken as one image in, class scores out. "
                    "Give the bundle folder `coral-train train` wrote (its manifest names "
                    "the outputs and the operating point) instead of the file")
            raise ModelError(
                f"{bundle.root}: the model has {len(inputs)} input(s) and {len(outputs)} "
                f"output(s); this bundle declares 1 input and {len(bundle.outputs)} "
                f"output(s) {list(bundle.outputs)}: a different model was put in the bundle")
        inp, out = inputs[0], outputs[0]
        shape = tuple(int(d) for d in inp["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise ModelError(
                f"{bundle.cpu_model}: input shape {shape} is not 1xHxWx3: not an image "
                "classifier this daemon can feed"
            )
        self.height, self.width = shape[1], shape[2]
        self.input_dtype = np.dtype(inp["dtype"])
        if bundle.input is not None and self.input_dtype != np.dtype(bundle.input.dtype):
            raise ModelError(
                f"{bundle.root}: the model takes {self.input_dtype} input but the manifest "
                f"says {bundle.input.dtype}: a float or differently quantized model was put "
                "in the bundle; export a full-integer model")
        self._input_index = inp["index"]
        self._output_index = out["index"]
        self._extra_outputs = [(d["index"], *d.get("quantization", (0.0, 0)))
                               for d in outputs[1:]]
        self.out_scale, self.out_zero = out.get("quantization", (0.0, 0))
        n_out = int(np.prod(out["shape"]))
        labels = bundle.labels or tuple(str(i) for i in range(n_out))
        if len(labels) != n_out:
            raise ModelError(
                f"{bundle.root}: the model has {n_out} outputs but the labels file has "
                f"{len(labels)} labels: use the labels the model was trained with"
            )
        spec = bundle.input
        if spec is not None and (spec.width, spec.height) != (self.width, self.height):
            raise ModelError(
                f"{bundle.root}: manifest input {spec.width}x{spec.height} disagrees with "
                f"the model's {self.width}x{self.height}: rebuild the bundle"
            )
        self.bundle = bundle if bundle.labels else replace(bundle, labels=labels)
        self.postprocess = Postprocess(self.bundle.labels, float(self.out_scale),
                                       int(self.out_zero), top_k, min_score)
        self.resize_policy = spec.resize if spec else "stretch"
        self.swap_rb = bool(spec and spec.colour_order == "BGR")
        self._resized = np.empty((self.height, self.width, 3), np.uint8)
        self._scratch: dict = {}  # infer()'s own halving buffers (like the interpreter,
        # a classifier is used by one thread at a time)

    def prepare(self, rgb: np.ndarray, out: np.ndarray | None = None,
                scratch: dict | None = None) -> np.ndarray:
        """A frame resized for this model, into `out` when given (the capture thread passes
        a pooled buffer and its own scratch, so the resize overlaps the previous frame's
        inference and allocates nothing)."""
        if out is None:
            out = np.empty((self.height, self.width, 3), np.uint8)
        out = processing.resize(rgb, self.width, self.height, self.resize_policy, out=out,
                                scratch=scratch)
        return out[..., ::-1] if self.swap_rb else out

    def _input_view(self) -> np.ndarray:
        # tensor() returns a view valid until the next allocate/invoke; fetch per frame.
        return self.interpreter.tensor(self._input_index)()[0]

    def infer(self, rgb: np.ndarray, prepared: bool = False) -> Inference:
        """Invoke on one RGB frame (any size; `prepared` when from prepare()); the input
        tensor is filled in place and `rgb` is not needed once this returns."""
        t0 = time.perf_counter()
        if prepared:
            resized = rgb
        else:
            resized = processing.resize(rgb, self.width, self.height, self.resize_policy,
                                        out=self._resized, scratch=self._scratch)
            if self.swap_rb:
                resized = resized[..., ::-1]
        processing.quantize_input(resized, self.input_dtype, out=self._input_view())
        t1 = time.perf_counter()
        self.interpreter.invoke()
        t2 = time.perf_counter()
        raw = self.interpreter.get_tensor(self._output_index)  # a copy
        extra = tuple(processing.dequantize(self.interpreter.get_tensor(i), sc, zp).reshape(-1)
                      for i, sc, zp in self._extra_outputs)
        return Inference(raw, (t1 - t0) * 1e3, (t2 - t1) * 1e3, self.postprocess, extra)

    def classify(self, rgb: np.ndarray, prepared: bool = False) -> Classification:
        """Rank the classes of one RGB frame: infer() and rank at once."""
        return self.infer(rgb, prepared).classify()

    def scores(self, rgb: np.ndarray) -> np.ndarray:
        """All dequantized scores for one frame (evaluation)."""
        return processing.dequantize(self.infer(rgb).raw, self.out_scale, self.out_zero)

    def close(self) -> None:
        # Dropping the interpreter releases the delegate and with it the TPU.
        self.interpreter = None


# The registry: backend name -> function(bundle, options) -> (interpreter, runtime name).
BACKENDS: dict[str, Callable[..., tuple[object, str]]] = {
    "cpu": lambda bundle, num_threads, device: runtimes.cpu_interpreter(
        str(bundle.model_for("cpu")), num_threads),
    "edgetpu": lambda bundle, num_threads, device: runtimes.edgetpu_interpreter(
        str(bundle.model_for("edgetpu")), device),
}


def create_classifier(bundle: Bundle, backend: str = "auto", *, allow_cpu_fallback: bool = False,
                      device: str = "", num_threads: int = 2, top_k: int = 3,
                      min_score: float = 0.0) -> TFLiteClassifier:
    """Build the classifier for a backend name; 'auto' prefers the Edge TPU."""
    if backend == "auto":
        try:
            return create_classifier(bundle, "edgetpu", device=device, num_threads=num_threads,
                                     top_k=top_k, min_score=min_score)
        except (BackendError, ModelError) as exc:
            if not allow_cpu_fallback:
                raise BackendError(
                    f"backend = \"auto\" found no usable Edge TPU: {exc} To run on the CPU "
                    "instead, set model.allow_cpu_fallback = true or model.backend = \"cpu\"."
                ) from None
            log.warning("Edge TPU unavailable, falling back to the CPU: %s", exc)
            backend = "cpu"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of auto, "
                         + ", ".join(sorted(BACKENDS)))
    interpreter, runtime = BACKENDS[backend](bundle, num_threads, device)
    return TFLiteClassifier(interpreter, bundle, backend, runtime, top_k, min_score)
