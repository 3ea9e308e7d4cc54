"""MobileNetV2 transfer-learning model and its two training phases.

Phase 1 trains only the head, on base features computed once (a few augmented copies per
image) instead of every epoch: the frozen base gives the same output each epoch, so
recomputing it is pure waste. Phase 2 fine-tunes the upper base end to end with online
augmentation (host_training.train.augment, numpy + OpenCV), batch norm frozen. The exported
model adds a class-mean cosine similarity output for the reject path.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from host_training.train.settings import TrainSettings

log = logging.getLogger(__name__)


class L2Normalize(keras.layers.Layer):
    """Unit-length features; converts to one L2_NORMALIZATION op (on the Edge TPU), where
    keras.layers.UnitNormalization becomes float SQUARE/SUM/RSQRT ops on the CPU."""

    def call(self, x):
        return tf.nn.l2_normalize(x, axis=-1)


@dataclass
class Built:
    """The parts of the model that the phases need to reach."""

    model: keras.Model  # uint8-range RGB in, softmax out
    base: keras.Model
    extractor: keras.Model  # input -> pooled features
    head: keras.Model  # pooled features -> softmax (shares the Dense layer with model)
    similarity: keras.Model | None = None  # input -> cosine to each class mean (set later)


@dataclass
class History:
    phases: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def build_model(n_classes: int, s: TrainSettings) -> Built:
    # The same data and --seed give the same model: seeded RNGs and deterministic kernels.
    keras.utils.set_random_seed(s.seed)
    tf.config.experimental.enable_op_determinism()
    shape = (s.input_size, s.input_size, 3)
    base = keras.applications.MobileNetV2(input_shape=shape, alpha=s.alpha, include_top=False,
                                          weights=None)
    if s.weights == "imagenet":
        # The network is fully convolutional, so the 224 px ImageNet weights serve every
        # input size; Keras's per-size files are the same weights and not always present.
        ref = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=s.alpha,
                                             include_top=False, weights="imagenet")
        base.set_weights(ref.get_weights())
        del ref
    elif s.weights != "none":
        base.load_weights(s.weights)
    base.trainable = False
    inputs = keras.Input(shape, name="image")
    # MobileNetV2's own scaling inside the model: the exported model takes 0..255 pixels.
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)
    if s.pretrained:
        # Batch norm stays in inference mode, also while fine-tuning: its ImageNet
        # statistics are worth more than what a few hundred photos would make of them.
        x = base(x, training=False)
    else:
        # From scratch there are no statistics to keep: batch norm learns them, with a
        # momentum fast enough for a small dataset's few hundred steps.
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
        x = base(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    dropout = keras.layers.Dropout(s.dropout, name="dropout")
    dense = keras.layers.Dense(n_classes, activation="softmax", name="classes")
    model = keras.Model(inputs, dense(dropout(pooled)), name="classifier")
    extractor = keras.Model(inputs, pooled, name="extractor")
    feat_in = keras.Input((pooled.shape[-1],), name="features")
    head = keras.Model(feat_in, dense(dropout(feat_in)), name="head")
    return Built(model, base, extractor, head)


def add_similarity(built: Built, means: np.ndarray) -> keras.Model:
    """The model for export: [cosine similarity to each class mean, class scores].

    The similarity head is an L2 normalisation and a bias-free Dense whose kernel is the
    class means, so it runs on the Edge TPU with the rest. The outputs are listed in the
    reverse of the bundle's order because the TFLite converter reverses them; quantize()
    checks the result.
    """
    inputs = built.model.inputs[0]
    pooled = built.extractor(inputs)
    sim_layer = keras.layers.Dense(means.shape[0], use_bias=False, name="similarity",
                                   trainable=False)
    sims = sim_layer(L2Normalize(name="unit")(pooled))
    sim_layer.set_weights([means.T.astype(np.float32)])
    built.similarity = keras.Model(inputs, sims, name="similarity")
    return keras.Model(inputs, [sims, built.model(inputs)], name="classifier_ood")


def _batches(images: np.ndarray, labels: np.ndarray | None, s: TrainSettings) -> tf.data.Dataset:
    """Plain (validation) batches, cast to float inside the pipeline."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels) if labels is not None else images)
    ds = ds.batch(s.batch_size)

    def prep(x, *y):
        x = tf.cast(x, tf.float32)
        return (x, *y) if y else x

    return ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


@dataclass
class Extras:
    """What the numpy augmentation needs besides the images: each sample's kind (a 'crop'
    may be pasted onto a background), the note's aspect, and the backgrounds to paste on."""

    kinds: list[str]
    aspects: np.ndarray
    backgrounds: np.ndarray | None

    def take(self, idx) -> Extras:
        return Extras([self.kinds[i] for i in idx], self.aspects[idx], self.backgrounds)


def extract_features(built: Built, images: np.ndarray, s: TrainSettings, augment: bool,
                     desc: str, extras: Extras | None = None, seed: int = 0,
                     model: keras.Model | None = None) -> np.ndarray:
    """Pooled base features (or `model`'s output) for every image, with a progress bar.

    Batches are sliced from numpy directly: a tf.data pipeline would embed the whole
    image array in a new graph on every call, which costs more than the pass itself.
    """
    from host_training.train.augment import augment_batch

    rng = np.random.default_rng(seed)
    net = model or built.extractor
    extract = tf.function(lambda x: net(x, training=False))
    out = []
    for i in tqdm(range(0, len(images), s.batch_size), desc=desc, unit="batch", leave=False):
        batch = images[i : i + s.batch_size]
        if augment:
            e = extras.take(np.arange(i, i + len(batch))) if extras is not None else None
            batch = augment_batch(batch, s.augment, rng, e.kinds if e else None,
                                  e.aspects if e else None, e.backgrounds if e else None)
        out.append(extract(tf.cast(tf.convert_to_tensor(batch), tf.float32)).numpy())
    if out:
        return np.concatenate(out)
    return np.zeros((0, int(net.output_shape[-1])), np.float32)


def _onehot(labels: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[labels]


def _loss(s: TrainSettings):
    return keras.losses.CategoricalCrossentropy(label_smoothing=s.label_smoothing)


def _fit_log(phase: str):
    from host_training.train.progress import EpochProgress  # a bar with ETA at a terminal

    return EpochProgress(phase, log)


def train_head(built: Built, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
               val_y: np.ndarray, n: int, s: TrainSettings, weights: dict | None,
               history: History, extras: Extras | None = None) -> dict | None:
    """Phase 1: cached features (1 clean + feature_copies augmented per image) -> head.

    Skipped without pretrained weights: a random base's features are not worth caching.
    Returns the cache {"train": [views], "val": features} for the leave-one-series-out
    figures, or None.
    """
    import time

    if not s.pretrained:
        log.info("no pretrained weights: skipping the frozen phase; the whole network trains")
        return None
    t0 = time.perf_counter()
    feats = [extract_features(built, train_x, s, False, "features (clean)")]
    for i in range(s.feature_copies):
        feats.append(extract_features(built, train_x, s, True,
                                      f"features (augmented {i + 1}/{s.feature_copies})",
                                      extras, seed=s.seed + 1 + i))
    f_train = np.concatenate(feats)
    y_train = np.tile(train_y, len(feats))
    f_val = extract_features(built, val_x, s, False, "features (validation)")
    history.seconds["feature_cache"] = time.perf_counter() - t0
    cache = {"train": feats, "val": f_val}
    if s.epochs == 0:
        return cache
    built.head.compile(optimizer=keras.optimizers.Adam(s.learning_rate), loss=_loss(s),
                       metrics=["accuracy"])
    t0 = time.perf_counter()
    h = built.head.fit(
        f_train, _onehot(y_train, n), validation_data=(f_val, _onehot(val_y, n)),
        epochs=s.epochs, batch_size=s.batch_size, class_weight=weights, verbose=0,
        shuffle=True,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=s.patience,
                                                 restore_best_weights=True), _fit_log("head")])
    history.seconds["head"] = time.perf_counter() - t0
    history.seconds["head_per_epoch"] = history.seconds["head"] / len(h.history["loss"])
    history.phases["head"] = {k: [float(v) for v in vs] for k, vs in h.history.items()}
    return cache


def _layer_index(base: keras.Model, which: int | str) -> int:
    if isinstance(which, int) or str(which).isdigit():
        return int(which)
    for i, layer in enumerate(base.layers):
        if layer.name == which:
            return i
    raise ValueError(f"--fine-tune-from {which!r} is not a layer of MobileNetV2 "
                     f"(e.g. block_13_expand, or an index 0..{len(base.layers) - 1})")


def _stream(images: np.ndarray, y: np.ndarray, w: np.ndarray, s: TrainSettings,
            extras: Extras | None, steps: int):
    """Endless (x, y, sample_weight) batches, freshly augmented, `steps` per epoch."""
    from host_training.train.augment import augment_batch

    rng = np.random.default_rng(s.seed)
    order: list[int] = []
    while True:
        for _ in range(steps):
            if len(order) < s.batch_size:
                order.extend(rng.permutation(len(images)).tolist())
            idx = np.asarray(order[: s.batch_size])
            del order[: s.batch_size]
            e = extras.take(idx) if extras is not None else None
            x = augment_batch(images[idx], s.augment, rng, e.kinds if e else None,
                              e.aspects if e else None, e.backgrounds if e else None)
            yield x.astype(np.float32), y[idx], w[idx]


def fine_tune(built: Built, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
              val_y: np.ndarray, n: int, s: TrainSettings, weights: dict | None,
              history: History, extras: Extras | None = None) -> None:
    """Phase 2: unfreeze the base from a layer on; low learning rate; BN in inference mode."""
    import time

    if s.fine_tune_epochs == 0:
        return
    start = _layer_index(built.base, s.ft_from)
    built.base.trainable = True
    for layer in built.base.layers[:start]:
        layer.trainable = False
    if s.pretrained:
        # Keras 3 does not keep `base(x, training=False)` once the base is trainable: the
        # moving statistics would drift during fit. A non-trainable BatchNormalization
        # always runs in inference mode, so freeze them explicitly.
        for layer in built.base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    trainable = sum(1 for layer in built.base.layers if layer.trainable and layer.weights)
    log.info("fine-tuning %d weighted base layers from layer %d at lr %.0e", trainable, start,
             s.ft_lr)
    built.model.compile(optimizer=keras.optimizers.Adam(s.ft_lr), loss=_loss(s),
                        metrics=["accuracy"])
    samples = s.epoch_samples or len(train_x)
    steps = max(1, -(-samples // s.batch_size))
    sample_w = np.asarray([weights.get(int(c), 1.0) if weights else 1.0 for c in train_y],
                          np.float32)
    train = _stream(train_x, _onehot(train_y, n), sample_w, s, extras, steps)
    val = _batches(val_x, _onehot(val_y, n), s)
    t0 = time.perf_counter()
    warnings.filterwarnings("ignore", message=".*shuffle=True. was passed")
    h = built.model.fit(
        train, validation_data=val, epochs=s.fine_tune_epochs, steps_per_epoch=steps, verbose=0,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=s.patience,
                                                 restore_best_weights=True),
                   # a plateau under heavy augmentation is noise more often than a minimum
                   keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3,
                                                     patience=max(1, s.patience // 2)),
                   _fit_log("fine-tune")])
    history.seconds["fine_tune"] = time.perf_counter() - t0
    history.seconds["fine_tune_per_epoch"] = history.seconds["fine_tune"] / len(h.history["loss"])
    history.phases["fine_tune"] = {k: [float(v) for v in vs] for k, vs in h.history.items()}


def predict(model: keras.Model, images: np.ndarray, s: TrainSettings) -> np.ndarray:
    """Float model probabilities for uint8 images."""
    run = tf.function(lambda x: model(x, training=False))
    out = [run(tf.cast(images[i : i + s.batch_size], tf.float32)).numpy()
           for i in range(0, len(images), s.batch_size)]
    return np.concatenate(out)
