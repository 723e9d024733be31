"""Verification thresholds chosen from data, and LFW's 10-fold accuracy.

A pair is declared "same identity" when its embedding distance is ``<= threshold``.
The threshold is never hard-coded: :func:`choose_threshold` picks it on validation
pairs, either for the best accuracy or for a target false-accept rate, and the
result (:class:`VerificationThreshold`) is kept with the model as JSON
(``threshold.json``, written by :mod:`convjax.runs.faces`).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

CRITERIA = ("accuracy", "far")


def _check_pairs(distances, same) -> None:
    if np.ndim(distances) != 1 or np.shape(distances) != np.shape(same):
        raise ValueError(
            f"distances and same must both be [N]; got {np.shape(distances)} and {np.shape(same)}"
        )


@jax.jit
def accuracy_threshold(
    distances: jax.Array, same: jax.Array, weights: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """The threshold with the best (weighted) accuracy, jit-able.

    Args:
      distances: [N] pair distances.
      same: [N] 1 for same-identity pairs, 0 otherwise.
      weights: [N] optional per-pair weights (0 leaves a pair out).

    Returns:
      ``(threshold, accuracy)``: scalars; the threshold lies midway between two
      consecutive distinct distances of the weighted pairs (or 1 below all of them
      when rejecting every pair is best). Ties go to the smallest threshold.
    """
    d = jnp.asarray(distances, jnp.float32)
    y = jnp.asarray(same).astype(jnp.float32)
    w = jnp.ones_like(d) if weights is None else jnp.asarray(weights, jnp.float32)
    order = jnp.argsort(d)
    d, y, w = d[order], y[order], w[order]
    counted = w > 0
    accepted_same = jnp.cumsum(w * y)  # cut after i: pairs 0..i are accepted
    accepted_diff = jnp.cumsum(w * (1.0 - y))
    total_diff = accepted_diff[-1]
    correct = accepted_same + (total_diff - accepted_diff)
    # The next counted distance after each position (inf after the last one): a cut
    # after i is a real threshold only where that distance is larger than d[i].
    counted_d = jnp.where(counted, d, jnp.inf)
    next_d = jnp.append(jax.lax.cummin(counted_d, reverse=True)[1:], jnp.inf)
    can_cut = counted & (next_d > d)
    correct = jnp.where(can_cut, correct, -1.0)
    thresholds = jnp.where(jnp.isfinite(next_d), (d + next_d) / 2.0, d + 1.0)
    # Prepend "reject everything": below the smallest counted distance.
    correct = jnp.concatenate([total_diff[None], correct])
    thresholds = jnp.concatenate([(jnp.min(counted_d) - 1.0)[None], thresholds])
    best = jnp.argmax(correct)
    return thresholds[best], correct[best] / jnp.sum(w)


def far_threshold(distances, same, target_far: float) -> float:
    """The loosest threshold whose false-accept rate on these pairs is <= ``target_far``."""
    _check_pairs(distances, same)
    if not 0.0 <= target_far <= 1.0:
        raise ValueError(f"target_far must be in [0, 1]; got {target_far}")
    d = np.asarray(distances, np.float64)
    negatives = np.sort(d[np.asarray(same) == 0])
    if negatives.size == 0:
        raise ValueError("choosing a threshold for a FAR needs different-identity pairs")
    allowed = int(np.floor(target_far * negatives.size + 1e-9))
    if allowed >= negatives.size:
        return float(d.max())
    first_rejected = negatives[allowed]
    below = d[d < first_rejected]
    return (
        float((below.max() + first_rejected) / 2.0) if below.size else float(first_rejected - 1.0)
    )


@dataclasses.dataclass(frozen=True)
class VerificationThreshold:
    """A threshold chosen on validation pairs, with how it was chosen and how it did."""

    threshold: float
    criterion: str
    target_far: float | None
    accuracy: float
    far: float
    tar: float
    num_pairs: int

    def accepts(self, distances) -> np.ndarray:
        """distances [...] -> bool [...], True where the pair is declared the same person."""
        return np.asarray(distances) <= self.threshold

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict (:meth:`from_dict` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> VerificationThreshold:
        """The threshold :meth:`to_dict` gave ``record``; unknown or missing fields say so."""
        names = [f.name for f in dataclasses.fields(cls)]
        if sorted(record) != sorted(names):
            raise ValueError(
                f"a verification threshold needs the fields {', '.join(names)}; "
                f"got {', '.join(sorted(record))}"
            )
        return cls(**record)


def choose_threshold(
    distances, same, criterion: str = "accuracy", target_far: float = 1e-3
) -> VerificationThreshold:
    """Picks the verification threshold on validation pairs.

    Args:
      distances: [N] pair distances (small = same).
      same: [N] 1 same identity, 0 different.
      criterion: ``'accuracy'`` (best accuracy) or ``'far'`` (loosest threshold with
        false-accept rate <= ``target_far``).
    """
    _check_pairs(distances, same)
    if criterion not in CRITERIA:
        raise ValueError(f"Unknown threshold criterion {criterion!r}; valid: {', '.join(CRITERIA)}")
    d = np.asarray(distances, np.float32)
    y = np.asarray(same).astype(bool)
    if criterion == "accuracy":
        threshold = float(accuracy_threshold(d, y)[0])
    else:
        threshold = far_threshold(d, y, target_far)
    accept = d <= threshold
    return VerificationThreshold(
        threshold=threshold,
        criterion=criterion,
        target_far=target_far if criterion == "far" else None,
        accuracy=float(np.mean(accept == y)),
        far=float(np.mean(accept[~y])) if (~y).any() else 0.0,
        tar=float(np.mean(accept[y])) if y.any() else 0.0,
        num_pairs=int(d.size),
    )


@partial(jax.jit, static_argnames="num_folds")
def _kfold(distances: jax.Array, same: jax.Array, num_folds: int):
    d = jnp.asarray(distances, jnp.float32)
    y = jnp.asarray(same).astype(bool)
    fold_of = (jnp.arange(d.shape[0]) * num_folds) // d.shape[0]

    def one_fold(k):
        held_out = fold_of == k
        threshold, _ = accuracy_threshold(d, y, (~held_out).astype(jnp.float32))
        correct = ((d <= threshold) == y) & held_out
        return jnp.sum(correct) / jnp.sum(held_out), threshold

    return jax.vmap(one_fold)(jnp.arange(num_folds))


def kfold_accuracy(distances, same, num_folds: int = 10) -> dict[str, np.ndarray | float]:
    """LFW's protocol: for each of ``num_folds`` consecutive folds of the pairs, the
    threshold with the best accuracy on the other folds is applied to it.

    Returns ``{'mean', 'std', 'fold_accuracies' [F], 'thresholds' [F]}``.
    """
    _check_pairs(distances, same)
    if not 2 <= num_folds <= np.size(distances):
        raise ValueError(f"num_folds must be in [2, {np.size(distances)}]; got {num_folds}")
    accuracies, thresholds = _kfold(np.asarray(distances), np.asarray(same), num_folds)
    accuracies = np.asarray(accuracies, np.float64)
    return {
        "mean": float(accuracies.mean()),
        "std": float(accuracies.std()),
        "fold_accuracies": accuracies,
        "thresholds": np.asarray(thresholds, np.float64),
    }
