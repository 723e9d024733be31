"""Verification metrics: ROC curve, AUC, EER, TAR@FAR, and a ROC figure.

Scores follow scikit-learn's convention: higher means "same identity". For
embedding distances pass ``scores = -distances``. ``labels`` are 1 for same-identity
pairs and 0 for different ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure


def _check_scores(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels must both be [N]; got {scores.shape}, {labels.shape}")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be 0 (different) or 1 (same)")
    if labels.all() or not labels.any():
        raise ValueError("a ROC curve needs both same (1) and different (0) pairs")
    return scores, labels.astype(bool)


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC at every distinct score: scores, labels [N] -> fpr, tpr, thresholds [T + 1].

    A pair is accepted when ``score >= threshold``; ``thresholds`` are decreasing and
    start at ``+inf`` (nothing accepted), like ``sklearn.metrics.roc_curve`` with
    ``drop_intermediate=False``.
    """
    scores, labels = _check_scores(scores, labels)
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(labels)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    tpr = np.r_[0.0, tps / labels.sum()]
    fpr = np.r_[0.0, fps / (~labels).sum()]
    return fpr, tpr, np.r_[np.inf, scores[last_of_tie]]


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under a ROC curve given by increasing ``fpr`` and ``tpr`` (trapezoids)."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


@jax.jit
def roc_auc(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """AUC as the Mann-Whitney statistic, jit-able: scores, labels [N] -> scalar.

    P(score of a same pair > score of a different pair), ties counting one half;
    computed from average ranks, O(N log N), with static shapes.
    """
    scores = jnp.asarray(scores, jnp.float32)
    positive = jnp.asarray(labels).astype(bool)
    ordered = jnp.sort(scores)
    below = jnp.searchsorted(ordered, scores, side="left")
    not_above = jnp.searchsorted(ordered, scores, side="right")
    ranks = (below + not_above + 1) / 2.0  # 1-based average ranks
    n_pos = jnp.sum(positive.astype(jnp.float32))
    n_neg = scores.shape[0] - n_pos
    rank_sum = jnp.sum(jnp.where(positive, ranks, 0.0))
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """The rate where the false-accept rate equals the false-reject rate ``1 - tpr``.

    Interpolated linearly between the two ROC points around the crossing.
    """
    gap = (1.0 - tpr) - fpr  # decreasing from 1 to -1 along the curve
    i = int(np.flatnonzero(gap <= 0)[0])
    if i == 0 or gap[i] == 0:
        return float(fpr[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    """True-accept rate at the loosest threshold whose false-accept rate is <= ``far``."""
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be in [0, 1]; got {far}")
    return float(np.max(tpr[fpr <= far]))


def verification_report(distances, same, fars=(1e-3, 1e-2, 1e-1)) -> dict[str, float]:
    """AUC, EER and TAR@FAR for pair ``distances`` [N] (small = same) and ``same`` [N]."""
    fpr, tpr, _ = roc_curve(-np.asarray(distances), same)
    report = {"auc": auc(fpr, tpr), "eer": equal_error_rate(fpr, tpr)}
    for far in fars:
        report[f"tar@far={far:g}"] = tar_at_far(fpr, tpr, far)
    return report


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """ROC curves, one line per ``name -> (fpr [T], tpr [T])``, on linear and log
    false-accept axes, drawn on a new Figure."""
    figure = Figure(figsize=(9, 4.5), dpi=100)
    axes = figure.subplots(1, 2)
    for ax, log in zip(axes, (False, True), strict=True):
        for name, (fpr, tpr) in curves.items():
            keep = fpr > 0 if log else slice(None)
            ax.plot(fpr[keep], tpr[keep], label=f"{name} (AUC {auc(fpr, tpr):.4f})")
        ax.set_xlabel("false accept rate" + (" (log)" if log else ""))
        ax.set_ylabel("true accept rate")
        ax.set_ylim(0, 1.01)
        if log:
            ax.set_xscale("log")
            ax.set_xlim(1e-4, 1)
            ax.grid(True, which="both", alpha=0.3)
        else:
            ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=0.8)
            ax.set_xlim(0, 1)
        ax.legend(loc="lower right")
    figure.suptitle("verification ROC")
    figure.tight_layout()
    return figure
