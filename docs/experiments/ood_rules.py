"""Experiment (docs, not product code): the shipped flagship with other OOD rules, each
calibrated the trainer's way (keep 99 % of correct validation notes, class thresholds at
0.5 % false-accept), on real untaught and foreign notes; and each score's AUROC.

Run from the repository root: `.venv/bin/python docs/experiments/ood_rules.py` (needs
../shared). The figures are in docs/flagship.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from device.openset import operating_point
from host_training.openset import calibrate, other_notes
from host_training.train.dataset import load_dataset
from host_training.train.evaluate import open_classifier, tflite_outputs

SHARED = Path("../shared/datasets")


def main() -> None:
    clf = open_classifier(Path("compiled_models/banknotes-vnd"), None)
    names = clf.bundle.labels
    ds = load_dataset(SHARED / "banknotes-vnd" / "valid", clf.width, clf.resize_policy,
                      class_names=names)
    val = tflite_outputs(clf, ds.images, "valid")
    notes = other_notes.load_other(SHARED / "banknotes-other", clf.width, names,
                                   parts=(other_notes.EVAL,), resize_policy=clf.resize_policy)
    outs = {g: tflite_outputs(clf, notes.array(g, clf.width), g) for g in notes.images}
    result = {}
    for kind in ("bundle", "class_mean_cosine", "max_softmax", "none"):
        point = operating_point(clf.bundle.manifest) if kind == "bundle" else \
            calibrate.calibrate(val, ds.labels, names, ["background"], [], kind, 0.99, 0.005)
        verdicts = calibrate.judge_all(point, names, val)
        accepted = np.array([v.accepted for v in verdicts])
        fig = other_notes.figures({g: calibrate.judge_all(point, names, o)
                                   for g, o in outs.items()}, notes)
        result[kind] = {
            "ood": point.ood.model_dump() if point.ood else None,
            "val_accepted_right": round(float((accepted & (val[0].argmax(1) == ds.labels))
                                              .mean()), 4),
            **{g: {k: r.get(k) for k in ("accepted", "refused", "accepted_right")}
               for g, r in fig.items()}}
    correct = val[0].argmax(1) == ds.labels

    def max_softmax(o):
        return 1 - o[0].max(1)

    def cosine(o):
        return 1 - o[1][np.arange(len(o[0])), o[0].argmax(1)]

    result["auroc"] = {f.__name__: {g: round(calibrate.auroc(f(val)[correct], f(o)), 4)
                                    for g, o in outs.items()} for f in (max_softmax, cosine)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
