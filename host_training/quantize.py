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


def fixed_batch(model: keras.Model) -> keras.Model:
    """The same model with its batch dimension fixed to 1."""
    inp = keras.Input(model.input_shape[1:], batch_size=1, name="image")
    return keras.Model(inp, model(inp, training=False), name=model.name)


def quantize(model: keras.Model, representative: np.ndarray) -> bytes:
    """Convert a float Keras model to a full-integer TFLite flatbuffer.

    representative: uint8 images (a stratified sample of the training set, >= 100).
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(fixed_batch(model))
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
