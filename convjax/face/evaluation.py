"""One-shot evaluation of an embedding on identities never seen in training.

Given embeddings of a validation split and a test split (disjoint identities):

1. **Threshold** from validation pairs (best accuracy, or a target FAR).
2. **One-shot identification** on the test split: one image per identity is
   enrolled in a :class:`~convjax.face.gallery.Gallery`, every other image is a
   query; top-1 / top-5 accuracy.
3. **Verification** on every test pair: ROC AUC, EER, TAR@FAR, accuracy at the
   validation threshold, and LFW-style 10-fold accuracy on a balanced sample of
   pairs (mean and standard error over the folds), and the test ROC curve.

Array math only: :mod:`convjax.runs.faces` embeds the splits of a trained workdir and
writes the results (``threshold.json``, ``roc.png``, ``face_eval.json``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from convjax.face import metrics, thresholds
from convjax.face.gallery import Gallery
from convjax.ops.distances import pairwise_squared_distances


class EmbeddingEvaluation(NamedTuple):
    """What :func:`evaluate_embeddings` found.

    ``report``: JSON-ready dict (``one_shot``, ``verification``, ``threshold``);
    ``threshold``: chosen on validation pairs; ``fpr``, ``tpr`` [T]: the ROC curve of
    the test pairs.
    """

    report: dict
    threshold: thresholds.VerificationThreshold
    fpr: np.ndarray
    tpr: np.ndarray


def embed_in_batches(
    embed: Callable[[jax.Array], jax.Array], images: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """images [N, H, W, C] -> embeddings [N, D]; ``embed`` is called on fixed-size
    batches (the last one padded) so it compiles once."""
    n = len(images)
    chunks = []
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size]
        real = len(batch)
        if real < batch_size:
            batch = np.concatenate(
                [batch, np.zeros((batch_size - real, *batch.shape[1:]), batch.dtype)]
            )
        chunks.append(np.asarray(embed(jnp.asarray(batch)))[:real])
    return np.concatenate(chunks)


def all_pairs(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair i < j: (squared distances [P], same [P] int)."""
    d = np.asarray(jax.jit(pairwise_squared_distances)(jnp.asarray(embeddings)))
    i, j = np.triu_indices(len(labels), k=1)
    return d[i, j], (labels[i] == labels[j]).astype(np.int32)


def balanced_pairs(
    distances: np.ndarray, same: np.ndarray, per_class: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """An LFW-like sample: ``per_class`` same and ``per_class`` different pairs, shuffled."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(same == 1), np.flatnonzero(same == 0)
    per_class = min(per_class, len(pos), len(neg))
    chosen = np.concatenate(
        [rng.choice(pos, per_class, replace=False), rng.choice(neg, per_class, replace=False)]
    )
    chosen = chosen[rng.permutation(len(chosen))]
    return distances[chosen], same[chosen]


def one_shot_identification(
    embeddings: np.ndarray, labels: np.ndarray, shots: int = 1, seed: int = 0, k: int = 5
) -> dict[str, float]:
    """Enrols ``shots`` random images per identity, identifies all the others.

    Returns top-1 and top-k accuracy over the queries and their counts.
    """
    rng = np.random.default_rng(seed)
    keys = rng.random(len(labels))
    order = np.lexsort((keys, labels))  # by identity, random within
    sorted_labels = labels[order]
    first = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.arange(len(labels)) - first
    enrolled = np.zeros(len(labels), bool)
    enrolled[order[rank < shots]] = True
    gallery = Gallery(embeddings.shape[1])
    gallery.enroll([str(v) for v in labels[enrolled]], embeddings[enrolled])
    k = min(k, gallery.num_identities)
    result = gallery.identify(embeddings[~enrolled], k=k)
    truth = np.array([str(v) for v in labels[~enrolled]])
    top = np.array(result.top_names)
    return {
        "top1": float(np.mean(top[:, 0] == truth)),
        f"top{k}": float(np.mean(np.any(top == truth[:, None], axis=1))),
        "queries": int((~enrolled).sum()),
        "identities": gallery.num_identities,
    }


def ten_fold_report(fold_accuracies: np.ndarray) -> dict[str, float | int]:
    """The k-fold accuracy as LFW result tables report it: the mean of the fold
    accuracies [F] and its standard error, ``std(ddof=1) / sqrt(F)`` (the spread of the
    mean, not of one fold)."""
    folds = np.asarray(fold_accuracies, np.float64)
    if folds.ndim != 1 or folds.size < 2:
        raise ValueError(f"fold_accuracies must be [F] with F >= 2; got shape {folds.shape}")
    return {
        "ten_fold_accuracy": float(folds.mean()),
        "ten_fold_standard_error": float(folds.std(ddof=1) / np.sqrt(folds.size)),
        "ten_fold_folds": int(folds.size),
    }


def format_ten_fold(report: dict) -> str:
    """``98.53 % ± 0.14 (standard error over 10 folds)`` from :func:`ten_fold_report`'s
    fields (in a verification report)."""
    return (
        f"{100 * report['ten_fold_accuracy']:.2f} % ± {100 * report['ten_fold_standard_error']:.2f}"
        f" (standard error over {report['ten_fold_folds']} folds)"
    )


def open_set_identification(
    embeddings: np.ndarray, labels: np.ndarray, threshold: float, seed: int = 0
) -> dict[str, float]:
    """Open-set identification at a verification ``threshold`` (squared distance, fitted
    on other identities): half the identities (chosen at random) are enrolled with one
    image each, the other half are strangers. Returns ``open_set_known_top1`` (a known
    identity's other images named correctly and accepted) and ``open_set_rejection``
    (a stranger's images rejected as not in the gallery)."""
    rng = np.random.default_rng(seed)
    identities = np.unique(labels)
    known_ids = rng.permutation(identities)[: max(1, len(identities) // 2)]
    known = np.isin(labels, known_ids)
    first = np.zeros(len(labels), bool)
    for identity in known_ids:  # one random enrolled image per known identity
        first[rng.choice(np.flatnonzero(labels == identity))] = True
    gallery = Gallery(embeddings.shape[1], threshold=float(threshold))
    gallery.enroll([str(v) for v in labels[first]], embeddings[first])
    queries = ~first
    names = np.array(gallery.identify(embeddings[queries]).names, dtype=object)
    truth = np.array([str(v) for v in labels[queries]], dtype=object)
    is_known = known[queries]
    return {
        "open_set_known_top1": float(np.mean(names[is_known] == truth[is_known])),
        "open_set_rejection": float(np.mean([n is None for n in names[~is_known]])),
    }


def verification_evaluation(
    validation: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    criterion: str = "accuracy",
    target_far: float = 1e-3,
    seed: int = 0,
) -> EmbeddingEvaluation:
    """Verification on every test pair with the threshold chosen on validation pairs:
    ``report`` holds ``verification`` (AUC, EER, TAR@FAR, accuracy/FAR/TAR at the
    threshold, LFW-style 10-fold accuracy) and ``threshold``. Inputs: (embeddings
    [N, D], labels [N]) of each split."""
    val_d, val_same = all_pairs(*validation)
    threshold = thresholds.choose_threshold(val_d, val_same, criterion, target_far)
    test_d, test_same = all_pairs(*test)
    fpr, tpr, _ = metrics.roc_curve(-test_d, test_same)
    lfw_d, lfw_same = balanced_pairs(test_d, test_same, per_class=3000, seed=seed)
    ten_fold = thresholds.kfold_accuracy(lfw_d, lfw_same, num_folds=10)
    accept = threshold.accepts(test_d)
    report = {
        "verification": {
            **metrics.verification_report(test_d, test_same),
            "accuracy_at_val_threshold": float(np.mean(accept == (test_same == 1))),
            "far_at_val_threshold": float(np.mean(accept[test_same == 0])),
            "tar_at_val_threshold": float(np.mean(accept[test_same == 1])),
            **ten_fold_report(ten_fold["fold_accuracies"]),
            "pairs": int(len(test_d)),
        },
        "threshold": threshold.to_dict(),
    }
    return EmbeddingEvaluation(report, threshold, fpr, tpr)


def evaluate_embeddings(
    validation: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    criterion: str = "accuracy",
    target_far: float = 1e-3,
    seed: int = 0,
) -> EmbeddingEvaluation:
    """The full evaluation (module docstring) from (embeddings [N, D], labels [N]) of
    the validation and test splits."""
    result = verification_evaluation(validation, test, criterion, target_far, seed)
    one_shot = one_shot_identification(*test, shots=1, seed=seed)
    return result._replace(report={"one_shot": one_shot, **result.report})
