"""Choose a bundle's operating point on validation data and measure it.

The int8 model's outputs on the validation frames and negatives give: the OOD threshold
(the share `ood_keep` of correctly classified notes passes it), then per class the lowest
score threshold whose false-accept rate (non-members accepted as the class, negatives
included) stays within `max_false_accept`, raised to the top-1 score that the share
`score_keep` of correctly classified notes reaches. Every figure goes through
device.policy.judge, the function the daemon and `coral-classifier classify` use.

Why two scores: on whole-recipe leave-one-denomination-out folds each rule refuses a
different kind of near input. The class-mean cosine removes foreign notes; max-softmax
separates an untaught note from the known ones better where the notes differ (AUROC 0.94
against 0.83 with 10,000 VND left out). Requiring both (cosine keeping 0.99, top-1 score
keeping 0.95), each fold re-calibrated on its own validation photos: untaught 10,000 VND
accepted 37.2 → 24.6 %, 20,000 VND 84.2 → 72.1 %; Iranian notes 0.8 → 0.3 % and 3.6 →
2.2 %; the known notes accepted right 91.3 → 89.7 % and 97.2 → 93.9 %. The score part
needs no new device code: it is the per-class score threshold every device already applies.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from device.openset import OodRule, OperatingPoint, Verdict
from device.policy import judge

log = logging.getLogger(__name__)
MIN_CLASS_THRESHOLD = 0.6  # below this a top-1 is a coin toss between classes, whatever
# validation says: a small validation set cannot vouch for it
REJECTED = "(rejected)"
NOT_A_CLASS = -1  # true label of a negative when the model has no background class


def ood_values(kind: str, outputs: Sequence[np.ndarray]) -> np.ndarray:
    """OOD score of each sample (rows of outputs[k]) for its top-1 class."""
    scores = outputs[0]
    top = scores.argmax(1)
    rows = np.arange(len(scores))
    if kind == "max_softmax":
        return 1.0 - scores[rows, top]
    return 1.0 - outputs[1][rows, top]


def calibrate(outputs: Sequence[np.ndarray], y: np.ndarray, labels: Sequence[str],
              background: Sequence[str], unknown: Sequence[str], kind: str, keep: float,
              max_false_accept: float, refused: Sequence[str] = (),
              score_keep: float = 1.0) -> OperatingPoint:
    """The operating point for validation outputs (N x n arrays per model output) whose
    true class ids are y (NOT_A_CLASS or a background id for negatives). Refused classes
    (learned in order to refuse them) are never accepted: their photos count as negatives.
    `score_keep` < 1 raises every class threshold to the top-1 score that share of the
    correctly classified notes reaches (max-softmax on top of the OOD rule; 1 = off)."""
    scores = outputs[0]
    top = scores.argmax(1)
    never = {i for i, lb in enumerate(labels) if lb in background or lb in unknown
             or lb in refused}
    positive = (y >= 0) & ~np.isin(y, list(never))
    correct = positive & (top == y)
    rule = None
    passes = np.ones(len(y), bool)
    if kind != "none":
        ood = ood_values(kind, outputs)
        limit = float(np.quantile(ood[correct], keep)) if correct.any() else 1.0
        rule = OodRule(kind=kind, threshold=round(limit + 1e-6, 6),
                       output=1 if kind == "class_mean_cosine" else 0)
        passes = ood <= rule.threshold
    floor = score_floor(scores, top, correct, score_keep)
    thresholds = {}
    for c, lb in enumerate(labels):
        if c in never:
            continue
        others = y != c
        wrong = np.sort(scores[(top == c) & passes & others, c])[::-1]
        allowed = int(np.floor(max_false_accept * max(1, int(others.sum()))))
        t = max(MIN_CLASS_THRESHOLD, floor)
        if len(wrong) > allowed:
            t = max(t, float(wrong[allowed]) + 1e-4)
        if t > 0.999:
            log.warning("class %s: no threshold keeps its validation false-accept rate within "
                        "%.3f; using 0.999", lb, max_false_accept)
        thresholds[lb] = round(min(t, 0.999), 4)
    return OperatingPoint(threshold=MIN_CLASS_THRESHOLD, class_thresholds=thresholds,
                          background_labels=list(background), unknown_labels=list(unknown),
                          refused_labels=list(refused), ood=rule)


def score_floor(scores: np.ndarray, top: np.ndarray, correct: np.ndarray,
                score_keep: float) -> float:
    """The top-1 score that the share `score_keep` of the correct rows reaches (0 when
    off, or without correct rows). One floor for every class, not one per class: a class
    has 20–50 validation notes, too few for its own low quantile."""
    if score_keep >= 1 or not correct.any():
        return 0.0
    rows = np.flatnonzero(correct)
    q = float(np.quantile(scores[rows, top[rows]], 1.0 - score_keep))
    return math.floor(q * 1e4) / 1e4  # down: the thresholds are kept to 4 decimals


def judge_all(point: OperatingPoint, labels: Sequence[str],
              outputs: Sequence[np.ndarray]) -> list[Verdict]:
    """device.policy.judge for every row; a refused label is never accepted (the manifest
    contract, applied here too so the trainer's figures hold whatever the device's version)."""
    n = len(outputs[0])
    out = []
    for i in range(n):
        v = judge(point, labels, [o[i] for o in outputs])
        if v.accepted and v.label in point.refused_labels:
            v = Verdict(v.label, v.score, False, v.ood_score, "refused")
        out.append(v)
    return out


def decision_report(verdicts: Sequence[Verdict], y: np.ndarray, labels: Sequence[str],
                    never: Sequence[str]) -> dict:
    """Accepted right / wrong value / rejected for notes, false accepts for negatives, and
    the confusion matrix with a rejected column (rows: true class; negatives as
    'background' or, without such a class, '(not a class)')."""
    y = np.asarray(y)
    accepted = np.array([v.accepted for v in verdicts], bool)
    pred = np.array([labels.index(v.label) for v in verdicts], int) if verdicts else np.zeros(0)
    never_ids = [i for i, lb in enumerate(labels) if lb in never]
    positive = (y >= 0) & ~np.isin(y, never_ids)
    negative = ~positive
    rows = [*labels, "(not a class)"]
    cols = [*labels, REJECTED]
    m = np.zeros((len(rows), len(cols)), int)
    for t, p, a in zip(y, pred, accepted, strict=True):
        m[t if t >= 0 else len(labels), p if a else len(labels)] += 1
    keep_rows = [i for i in range(len(rows)) if m[i].sum() or i < len(labels)]
    n_pos, n_neg = int(positive.sum()), int(negative.sum())
    return {
        "n_notes": n_pos,
        "top1": float((pred[positive] == y[positive]).mean()) if n_pos else None,
        "accepted_right": float((accepted & positive & (pred == y)).sum() / n_pos) if n_pos
        else None,
        "accepted_wrong": float((accepted & positive & (pred != y)).sum() / n_pos) if n_pos
        else None,
        "rejected_notes": float((~accepted & positive).sum() / n_pos) if n_pos else None,
        "n_negatives": n_neg,
        "false_accept": float((accepted & negative).sum() / n_neg) if n_neg else None,
        "confusion": {"rows": [rows[i] for i in keep_rows], "columns": cols,
                      "matrix": m[keep_rows].tolist()},
    }


def auroc(inside: np.ndarray, outside: np.ndarray) -> float | None:
    """Area under the ROC curve of an OOD score (larger = outside) separating the two."""
    if not len(inside) or not len(outside):
        return None
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    return float(roc_auc_score(y, np.r_[inside, outside]))


def plot_curves(outputs: Sequence[np.ndarray], y: np.ndarray, labels: Sequence[str],
                point: OperatingPoint, neg_outputs: Sequence[np.ndarray] | None,
                out_path) -> None:
    """Per-class false-accept vs accept-rate curves with the chosen thresholds, and the OOD
    scores' ROC (validation notes against negatives) for each score kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    scores = outputs[0]
    top = scores.argmax(1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    ax = axes[0]
    never = set(point.background_labels) | set(point.unknown_labels)
    for c, lb in enumerate(labels):
        if lb in never or not (y == c).any() or (y != c).all():
            continue
        s = np.where(top == c, scores[:, c], 0.0)
        fpr, tpr, thr = roc_curve(y == c, s)
        line, = ax.plot(fpr, tpr, label=lb)
        t = point.class_thresholds.get(lb, point.threshold)
        k = int(np.clip(np.searchsorted(-thr, -t), 0, len(thr) - 1))
        ax.plot(fpr[k], tpr[k], "o", color=line.get_color())
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("false-accept rate (others taken for the class)")
    ax.set_ylabel("accept rate of the class")
    ax.set_title("class thresholds (dots: chosen), int8, validation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[1]
    positive = (y >= 0) & ~np.isin(y, [labels.index(lb) for lb in never if lb in labels])
    correct = positive & (top == y)
    kinds = ["max_softmax"] + (["class_mean_cosine"] if len(outputs) > 1 else [])
    for kind in kinds:
        inside = ood_values(kind, outputs)[correct]
        outside = ood_values(kind, neg_outputs) if neg_outputs is not None and len(
            neg_outputs[0]) else ood_values(kind, outputs)[~positive]
        if not len(inside) or not len(outside):
            continue
        fpr, tpr, _ = roc_curve(np.r_[np.zeros(len(inside)), np.ones(len(outside))],
                                np.r_[inside, outside])
        ax.plot(fpr, tpr, label=f"{kind} (AUROC {auroc(inside, outside):.3f})")
    ax.set_xlabel("notes rejected")
    ax.set_ylabel("negatives rejected")
    ax.set_title("OOD score: notes vs negatives")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=80)
    plt.close(fig)


def fit_head(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, max_train: int = 12000):
    """A linear head (logistic regression) on frozen features, on at most `max_train` rows
    drawn at random: the proxy for the trained head in the leave-one-out figures."""
    from sklearn.linear_model import LogisticRegression

    idx = np.arange(len(y))
    if len(idx) > max_train:
        idx = rng.choice(idx, max_train, replace=False)
    return LogisticRegression(max_iter=300, C=0.5).fit(x[idx], y[idx])


def loso(views: Sequence[np.ndarray], labels: np.ndarray, series: Sequence[str],
         kinds: Sequence[str], test_feats: np.ndarray, test_labels: np.ndarray,
         test_series: Sequence[str], names: Sequence[str], seed: int = 0,
         max_train: int = 12000, same_series: np.ndarray | None = None) -> dict:
    """Leave-one-series-out accuracy of a linear head on frozen features.

    views: feature arrays of the training pool (a clean view and augmented ones, same row
    order); series/kinds per pool row. For each photo series: train on the pool rows of the
    other series (negatives from a folder always train), test on that series' whole frames
    (test_feats, e.g. the training and validation frames together). Also the ordinary split
    with the same head for comparison: trained on the whole pool, tested on the rows of
    test_feats marked in `same_series` (the validation frames), under "same_series".
    """
    rng = np.random.default_rng(seed)
    series = np.asarray(series)
    test_series = np.asarray(test_series)
    pool_x = np.concatenate(views)
    pool_y = np.tile(labels, len(views))
    pool_s = np.tile(series, len(views))

    def fit_eval(train_mask, test_mask) -> dict | None:
        if len(np.unique(pool_y[train_mask])) < 2:
            return None
        clf = fit_head(pool_x[train_mask], pool_y[train_mask], rng, max_train)
        pred = clf.classes_[clf.predict_proba(test_feats[test_mask]).argmax(1)]
        true = test_labels[test_mask]
        # what each class is taken for (the 500,000 <-> 100,000 confusion, per fold)
        per = {names[c]: {"recall": round(float((pred[true == c] == c).mean()), 4),
                          "n": int((true == c).sum()),
                          "taken_for": dict(Counter(
                              names[p] for p in pred[(true == c) & (pred != c)]
                              if 0 <= p < len(names)).most_common(3))}
               for c in np.unique(true)}
        return {"accuracy": round(float((pred == true).mean()), 4), "n": len(true),
                "per_class": per}

    out: dict = {}
    frames = [s for s in sorted(set(test_series)) if s not in ("negatives", "other")]
    for s in frames:
        test = test_series == s
        if not test.any():
            continue
        r = fit_eval(pool_s != s, test)
        if r is None:
            log.warning("leave-one-series-out: without series %s fewer than two classes "
                        "remain; skipped", s)
        else:
            out[str(s)] = r
    if same_series is not None and same_series.any():
        r = fit_eval(np.ones(len(pool_y), bool), same_series)
        if r is not None:
            out["same_series"] = r
    return out
