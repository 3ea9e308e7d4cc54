"""Near-OOD figures: how often a note the model was never taught is accepted.

A negative set of scenes and objects measures the far side of the reject path only: the
class-mean cosine separates an empty slot from a note perfectly, and an untaught note of the
same currency barely at all. Leave-one-denomination-out (LODO) reproduces that failure from
the data we have: for each known class, a head trained on the others' cached frozen features
(the same machinery as the leave-one-series-out figures, calibrate.fit_head) meets the
left-out class's validation photos, which it must refuse, next to the others' photos, which
it must accept right. Every figure goes through the bundle's own rule (calibrate.calibrate,
device.policy.judge); the other OOD scores are measured beside it for comparison.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np

from host_training.openset import calibrate

log = logging.getLogger(__name__)
KNN_K = 5
# OOD scores measured on every fold (larger = further from the known notes)
SCORES = ("class_mean_cosine", "max_softmax", "max_logit", "energy", "knn")
CURVE_KEEPS = (0.99, 0.95, 0.9, 0.8)  # shares of correct notes kept: the cost/benefit curve
UNMEASURED = ("the reject path for untaught notes is unmeasured: leave-one-denomination-out "
              "needs at least two known classes{}")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def class_means(features: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """n x d: the unit-length mean of each class's unit-length features (zeros for a class
    without samples, so its similarity is 0 and the OOD rule rejects it)."""
    f = unit(features)
    means = np.zeros((n, f.shape[1]), np.float32)
    for c in range(n):
        if (labels == c).any():
            m = f[labels == c].mean(0)
            means[c] = m / max(float(np.linalg.norm(m)), 1e-12)
    return means


def knn_distance(bank: np.ndarray, feats: np.ndarray, k: int = KNN_K) -> np.ndarray:
    """Distance of each unit-length feature to its k-th nearest unit-length bank feature
    (Sun et al., ICML 2022)."""
    if not len(feats):
        return np.zeros(0, np.float32)
    b, q = unit(bank).astype(np.float32), unit(feats).astype(np.float32)
    k = min(k, len(b))
    out = []
    for i in range(0, len(q), 512):
        d = 2.0 - 2.0 * q[i:i + 512] @ b.T
        out.append(np.sqrt(np.maximum(np.partition(d, k - 1, axis=1)[:, k - 1], 0)))
    return np.concatenate(out)


class FrozenHead:
    """A linear head and class means on frozen features: the int8 model's two outputs
    (scores, cosine to each class mean) as the proxy sees them, and the other OOD scores."""

    def __init__(self, x: np.ndarray, y: np.ndarray, n: int, never_ids: Sequence[int] = (),
                 seed: int = 0, max_train: int = 12000, bank: int = 4000):
        rng = np.random.default_rng(seed)
        self.n = n
        self.clf = calibrate.fit_head(x, y, rng, max_train)
        self.means = class_means(x, y, n)
        keep = rng.choice(len(x), min(bank, len(x)), replace=False)
        # the KNN bank: the known notes only (a background neighbour is no evidence of a note)
        self.bank = x[keep][~np.isin(y[keep], list(never_ids))]

    def outputs(self, feats: np.ndarray) -> list[np.ndarray]:
        """[scores, similarity] in the full label space (a class the head never saw: 0)."""
        probs = np.zeros((len(feats), self.n), np.float32)
        probs[:, self.clf.classes_] = self.clf.predict_proba(feats)
        return [probs, unit(feats) @ self.means.T]

    def scores(self, feats: np.ndarray, outputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Every OOD score in SCORES for each row (larger = less like a known note)."""
        logits = self.clf.decision_function(feats)
        if logits.ndim == 1:  # two classes: sklearn gives one margin
            logits = np.stack([-logits / 2, logits / 2], 1)
        m = logits.max(1)
        return {"class_mean_cosine": calibrate.ood_values("class_mean_cosine", outputs),
                "max_softmax": calibrate.ood_values("max_softmax", outputs),
                "max_logit": -m,
                "energy": -(m + np.log(np.exp(logits - m[:, None]).sum(1))),
                "knn": knn_distance(self.bank, feats) if len(self.bank) else np.zeros(len(feats))}


def lodo(views: Sequence[np.ndarray], labels: np.ndarray, val_feats: np.ndarray,
         val_labels: np.ndarray, names: Sequence[str], background: Sequence[str],
         never: Sequence[str], keep: float, max_false_accept: float, seed: int = 0,
         max_train: int = 12000, other: dict[str, np.ndarray] | None = None,
         score_keep: float = 1.0) -> dict:
    """Leave-one-denomination-out on frozen features.

    views: feature arrays of the training pool (a clean view and augmented ones, same rows);
    labels: pool class ids. val_feats/val_labels: validation frames and negatives (negatives
    carry a background id, or calibrate.NOT_A_CLASS). never: labels that are never accepted
    (background, unknown, refused): they are not left out and always train. `other`: named
    feature sets of real notes that are not ours, judged by every fold's head (near, too).
    keep / score_keep: the bundle's rule (calibrate.calibrate), calibrated per fold.

    Returns {"folds": {class: figures}, "mean": ..., "warning": ...}; figures per fold: the
    left-out class's accept rate at the operating point (and what it was taken for), the
    others' accepted right, validation negatives accepted (far), and per OOD score the AUROC
    (correct others against the left-out class) and the left-out accept rate at the score's
    own threshold keeping `keep` of the correct others.
    """
    pool_x = np.concatenate(views)
    pool_y = np.tile(np.asarray(labels), len(views))
    val_labels = np.asarray(val_labels)
    n = len(names)
    never_ids = [i for i, lb in enumerate(names) if lb in never]
    unknown = [lb for lb in never if lb not in background]
    known = [c for c in range(n) if c not in never_ids and (val_labels == c).any()
             and (pool_y == c).any()]
    if len(known) < 2:
        w = UNMEASURED.format(f" with validation photos (this dataset has {len(known)})")
        log.warning("%s", w)
        return {"folds": {}, "warning": w}
    folds: dict[str, dict] = {}
    for c in known:
        train = pool_y != c
        if len(np.unique(pool_y[train])) < 2:
            w = UNMEASURED.format(": without its class only one class remains (add "
                                  "--negatives or --boxes)")
            log.warning("%s", w)
            return {"folds": {}, "warning": w}
        head = FrozenHead(pool_x[train], pool_y[train], n, never_ids, seed + c, max_train)
        outs = head.outputs(val_feats)
        calib = val_labels != c
        point = calibrate.calibrate([o[calib] for o in outs], val_labels[calib], names,
                                    list(background), unknown, "class_mean_cosine", keep,
                                    max_false_accept, score_keep=score_keep)
        verdicts = calibrate.judge_all(point, names, outs)
        acc = np.array([v.accepted for v in verdicts])
        pred = outs[0].argmax(1)
        left = val_labels == c
        others = (val_labels >= 0) & ~np.isin(val_labels, [c, *never_ids])
        negatives = (val_labels < 0) | np.isin(val_labels, never_ids)
        correct = others & (pred == val_labels)
        taken = Counter(names[p] for p in pred[left & acc])
        fold = {"n_left_out": int(left.sum()),
                "left_out_accepted": round(float(acc[left].mean()), 4),
                "taken_for": dict(taken.most_common()),
                "others_accepted_right": round(float((acc & correct).sum() / others.sum()), 4),
                "others_top1": round(float(correct.sum() / others.sum()), 4),
                "n_negatives": int(negatives.sum()),
                "far_accepted": round(float(acc[negatives].mean()), 4) if negatives.any()
                else None,
                "scores": {}}
        sc = head.scores(val_feats, outs)
        for kind, v in sc.items():
            curve = {}
            for k in sorted({keep, *CURVE_KEEPS}, reverse=True):
                limit = float(np.quantile(v[correct], k)) if correct.any() else np.inf
                curve[str(k)] = round(float((v[left] <= limit).mean()), 4)
            fold["scores"][kind] = {
                "auroc": _round(calibrate.auroc(v[correct], v[left])),
                "left_out_accepted": curve[str(keep)], "curve": curve}
        if other:
            fold["other"] = {}
            for g, feats in other.items():
                if len(feats):
                    v = calibrate.judge_all(point, names, head.outputs(feats))
                    fold["other"][g] = round(float(np.mean([x.accepted for x in v])), 4)
        folds[names[c]] = fold
    out = {"folds": folds, "mean": _mean(folds)}
    log.info("leave-one-denomination-out (head on frozen features): left-out accepted %s",
             {k: f["left_out_accepted"] for k, f in folds.items()})
    return out


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def _mean(folds: dict[str, dict]) -> dict:
    """Means over folds of the headline figures and of each score's AUROC."""
    fs = list(folds.values())
    out = {k: round(float(np.mean([f[k] for f in fs])), 4)
           for k in ("left_out_accepted", "others_accepted_right")}
    far = [f["far_accepted"] for f in fs if f["far_accepted"] is not None]
    out["far_accepted"] = round(float(np.mean(far)), 4) if far else None
    out["worst_left_out_accepted"] = max(f["left_out_accepted"] for f in fs)
    out["scores"] = {}
    for kind in SCORES:
        a = [f["scores"][kind]["auroc"] for f in fs if f["scores"][kind]["auroc"] is not None]
        out["scores"][kind] = {
            "auroc": round(float(np.mean(a)), 4) if a else None,
            "left_out_accepted": round(float(np.mean(
                [f["scores"][kind]["left_out_accepted"] for f in fs])), 4),
            "curve": {k: round(float(np.mean([f["scores"][kind]["curve"][k] for f in fs])), 4)
                      for k in fs[0]["scores"][kind]["curve"]}}
    return out


def section(result: dict | None) -> list[str]:
    """report.md lines: the LODO table, one row per fold (near), far apart."""
    if not result:
        return []
    lines = ["## Near: notes the model was never taught", ""]
    if not result.get("folds"):
        return [*lines, f"**Warning**: {result.get('warning', 'not measured')}.", ""]
    lines += ["Leave-one-denomination-out (linear head on frozen ImageNet features, trained "
              "without one class, calibrated like the bundle: class-mean cosine and class "
              "thresholds). *Left-out accepted* must be 0: each of those photos is a note the "
              "head was never taught. *Far* is the validation negatives (scenes with no "
              "note) through the same head: a different question, kept apart.", "",
              "| left out | n | left-out accepted | taken for | others accepted right | far "
              "accepted | AUROC cosine | AUROC max-softmax | AUROC energy | AUROC KNN |",
              "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for c, f in result["folds"].items():
        s = f["scores"]
        taken = ", ".join(f"{k} {v}" for k, v in f["taken_for"].items()) or "–"
        lines.append(
            f"| {c} | {f['n_left_out']} | **{_pct(f['left_out_accepted'])}** | {taken} | "
            f"{_pct(f['others_accepted_right'])} | {_pct(f['far_accepted'])} | "
            + " | ".join(_num(s[k]["auroc"]) for k in ("class_mean_cosine", "max_softmax",
                                                       "energy", "knn")) + " |")
    m = result["mean"]
    lines += [f"| **mean** | | **{_pct(m['left_out_accepted'])}** (worst "
              f"{_pct(m['worst_left_out_accepted'])}) | | {_pct(m['others_accepted_right'])} | "
              f"{_pct(m['far_accepted'])} | "
              + " | ".join(_num(m["scores"][k]["auroc"]) for k in ("class_mean_cosine",
                                                                  "max_softmax", "energy",
                                                                  "knn")) + " |", ""]
    curves = {k: v["curve"] for k, v in m["scores"].items() if v.get("curve")}
    if curves:
        keeps = list(next(iter(curves.values())))
        lines += ["Each OOD score alone, its threshold set to keep a share of the correctly "
                  "classified known notes: left-out notes accepted (mean over folds).", "",
                  "| score | " + " | ".join(f"keep {float(k):.0%}" for k in keeps) + " |",
                  "|---|" + "---:|" * len(keeps)]
        for kind, c in curves.items():
            lines.append(f"| {kind} | " + " | ".join(_pct(c[k]) for k in keeps) + " |")
        lines.append("")
    return lines


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _num(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def summary(result: dict | None) -> str:
    """One line for the console."""
    if not result:
        return "near (leave-one-denomination-out): not measured"
    if not result.get("folds"):
        return f"near (leave-one-denomination-out): {result.get('warning')}"
    m = result["mean"]
    per = ", ".join(f"{c} {f['left_out_accepted']:.0%}" for c, f in result["folds"].items())
    return (f"near (leave-one-denomination-out, frozen features): left-out accepted mean "
            f"{m['left_out_accepted']:.1%} (worst {m['worst_left_out_accepted']:.1%}; {per}), "
            f"others accepted right {m['others_accepted_right']:.1%}, AUROC cosine "
            f"{_num(m['scores']['class_mean_cosine']['auroc'])} | far: validation negatives "
            f"accepted {_pct(m['far_accepted'])}")
