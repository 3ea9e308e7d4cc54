"""Full-integer post-training quantization: uint8 in and out, batch 1, int8 builtins only.

That is what edgetpu_compiler wants: a fixed batch (a dynamic one is "Model not
quantized"), no float ops, and uint8 at the edges so the device feeds pixels directly.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

log = logging.getLogger(__name__)


SOFTMAX_SCALE = 1 / 256  # what the converter gives every uint8 softmax output


def fixed_batch(model: keras.Model, reverse: bool = False) -> keras.Model:
    """The same model with its batch dimension fixed to 1 (outputs reversed if asked)."""
    shape = model.inputs[0].shape[1:]
    inp = keras.Input(shape, batch_size=1, name="image")
    out = model(inp, training=False)
    if reverse and isinstance(out, list | tuple):
        out = list(out)[::-1]
    return keras.Model(inp, out, name=model.name)


def output_quantization(flatbuffer: bytes) -> list[tuple[float, int]]:
    """(scale, zero_point) of each output of a TFLite model, in its output order."""
    it = tf.lite.Interpreter(model_content=flatbuffer)
    return [tuple(d["quantization"]) for d in it.get_output_details()]


def quantize(model: keras.Model, representative: np.ndarray) -> bytes:
    """Convert a float Keras model to a full-integer TFLite flatbuffer.

    representative: uint8 images (a stratified sample of the training set, >= 100).
    A model with several outputs must have the class scores (softmax) last in Keras: the
    converter reverses the order, and the result is checked to start with the softmax.
    """
    flatbuffer = _convert(fixed_batch(model), representative)
    if len(model.outputs) > 1:
        first = output_quantization(flatbuffer)[0]
        if abs(first[0] - SOFTMAX_SCALE) > 1e-9:
            log.info("the converter kept the Keras output order: converting again reversed")
            flatbuffer = _convert(fixed_batch(model, reverse=True), representative)
            first = output_quantization(flatbuffer)[0]
            if abs(first[0] - SOFTMAX_SCALE) > 1e-9:
                raise RuntimeError("the TFLite model's first output is not the class scores")
    return flatbuffer


def _convert(model: keras.Model, representative: np.ndarray) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8

    def gen():
        for img in tqdm(representative, desc="quantizing (calibration)", unit="img", leave=False):
            yield [img[None].astype(np.float32)]

    converter.representative_dataset = gen
    captured = io.StringIO()
    # The converter prints the whole saved-model signature to stdout; keep it for debug.
    with contextlib.redirect_stdout(captured), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        flatbuffer = converter.convert()
    log.debug("converter output:\n%s", captured.getvalue())
    return flatbuffer
