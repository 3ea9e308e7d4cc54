"""`make bench-train`: seconds per epoch of each training phase on a sample of a dataset.

Compares the frozen phase done our way (base features computed once, head trained on
them) with the usual end-to-end frozen training (the base recomputed every epoch), and
times fine-tuning. Each timed epoch follows a warm-up epoch (graph tracing excluded).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow's first import
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "banknotes-vnd"
                                          / "train"))
    ap.add_argument("--images", type=int, default=256, help="sample size (default 256)")
    ap.add_argument("--input_size", "--input-size", dest="input_size", type=int, default=224)
    ap.add_argument("--weights", default="imagenet")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import keras

    from host_training.train import model as M
    from host_training.train.dataset import load_dataset, stratified_sample
    from host_training.train.settings import make_settings

    s = make_settings(data=args.data, out="/tmp/bench-train", input_size=args.input_size,
                      weights=args.weights, feature_copies=4, patience=100)
    full = load_dataset(Path(args.data), s.input_size)
    ds = full.subset(stratified_sample(full.labels, args.images, 0))
    n = len(ds.class_names)
    y = np.eye(n, dtype=np.float32)[ds.labels]
    built = M.build_model(n, s)

    t0 = time.perf_counter()
    feats = [M.extract_features(built, ds.images, s, aug, "features")
             for aug in [False] + [True] * s.feature_copies]
    cache_s = time.perf_counter() - t0
    f, yy = np.concatenate(feats), np.tile(y, (len(feats), 1))

    # What another camera sees: a linear head on these cached features, trained without one
    # photo series and tested on it, next to the same head on an ordinary split.
    from host_training.openset.calibrate import loso
    from host_training.train.dataset import stratified_split
    from host_training.train.samples import FRAME, series_of

    series = [series_of(p) for p in ds.paths]
    tr, va = stratified_split(ds.labels, 0.2, 0)
    t0 = time.perf_counter()
    series_out = loso([v[tr] for v in feats], ds.labels[tr], [series[i] for i in tr],
                      [FRAME] * len(tr), feats[0], ds.labels, series, ds.class_names,
                      same_series=np.isin(np.arange(len(ds.labels)), va))
    loso_s = time.perf_counter() - t0
    # Near: how often a note the head was never taught is accepted (leave one class out),
    # through the bundle's rule; far needs negatives, which this sample has none of.
    from host_training.openset import nearood

    t0 = time.perf_counter()
    lodo = nearood.lodo([v[tr] for v in feats], ds.labels[tr], feats[0][va], ds.labels[va],
                        ds.class_names, [], [], s.ood_keep, s.max_false_accept,
                        score_keep=s.score_keep)
    lodo_s = time.perf_counter() - t0
    built.head.compile(optimizer="adam", loss="categorical_crossentropy")
    built.head.fit(f, yy, epochs=1, batch_size=s.batch_size, verbose=0)
    t0 = time.perf_counter()
    built.head.fit(f, yy, epochs=3, batch_size=s.batch_size, verbose=0)
    head_epoch = (time.perf_counter() - t0) / 3

    def timed_epoch(model) -> float:
        steps = -(-len(ds.labels) // s.batch_size)
        data = M._stream(ds.images, y, np.ones(len(y), np.float32), s, None, steps)
        model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
        t = time.perf_counter()
        model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
        return time.perf_counter() - t

    built.base.trainable = False
    built.model.compile(optimizer="adam", loss="categorical_crossentropy")
    frozen_epoch = timed_epoch(built.model)
    built.base.trainable = True
    for layer in built.base.layers[:100]:
        layer.trainable = False
    for layer in built.base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    built.model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy")
    fine_epoch = timed_epoch(built.model)

    epochs = s.epochs
    summary = {
        "images": len(ds.labels), "input_size": s.input_size, "feature_copies": s.feature_copies,
        "feature_cache_s": round(cache_s, 2),
        "head_epoch_on_cached_features_s": round(head_epoch, 3),
        "end_to_end_frozen_epoch_s": round(frozen_epoch, 2),
        "speedup_per_epoch": round(frozen_epoch / head_epoch, 1),
        f"frozen_phase_{epochs}_epochs_cached_s": round(cache_s + epochs * head_epoch, 1),
        f"frozen_phase_{epochs}_epochs_end_to_end_s": round(epochs * frozen_epoch, 1),
        "fine_tune_epoch_s": round(fine_epoch, 2),
        "leave_one_series_out": {k: {"top1": v["accuracy"], "n": v["n"]}
                                 for k, v in series_out.items()},
        "leave_one_series_out_s": round(loso_s, 1),
        "leave_one_denomination_out": {
            c: {"left_out_accepted": f["left_out_accepted"],
                "others_accepted_right": f["others_accepted_right"],
                "auroc_class_mean_cosine": f["scores"]["class_mean_cosine"]["auroc"]}
            for c, f in lodo["folds"].items()},
        "leave_one_denomination_out_s": round(lodo_s, 1),
    }
    print(f"\n{len(ds.labels)} images at {s.input_size} px")
    print(f"feature cache (1 clean + {s.feature_copies} augmented passes): {cache_s:.1f} s")
    print(f"head epoch on cached features ({len(f)} samples): {head_epoch:.3f} s")
    print(f"end-to-end frozen epoch:  {frozen_epoch:.2f} s  "
          f"({summary['speedup_per_epoch']}x slower per epoch)")
    cached = summary[f"frozen_phase_{epochs}_epochs_cached_s"]
    e2e = summary[f"frozen_phase_{epochs}_epochs_end_to_end_s"]
    print(f"frozen phase, {epochs} epochs: cached {cached} s vs end-to-end {e2e} s")
    print(f"fine-tuning epoch (from layer 100): {fine_epoch:.2f} s")
    print(f"head on cached features, top-1 by held-out photo series ({loso_s:.1f} s): " +
          ", ".join(f"{k} {v['accuracy']:.3f} (n={v['n']})" for k, v in series_out.items()) +
          "\n")
    print(f"{nearood.summary(lodo)} ({lodo_s:.1f} s; far: no negatives in this sample)\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
