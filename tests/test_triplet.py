"""Triplet and contrastive losses against plain numpy loops written from the formulas."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.losses import contrastive, triplet
from convjax.ops import distances

MARGIN = 0.2


# ----------------------------------------------------------------- numpy references
def ref_d(x, y):
    return float(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2))


def ref_triplets(labels, mask):
    """Every valid (a, p, n): a != p same label, n another label, all real."""
    idx = [i for i in range(len(labels)) if mask[i]]
    return [
        (a, p, n)
        for a, p, n in itertools.product(idx, idx, idx)
        if a != p and labels[a] == labels[p] and labels[n] != labels[a]
    ]


def ref_reduce(losses, reduction):
    losses = np.asarray(losses, np.float64)
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean() if len(losses) else 0.0
    active = losses[losses > 0]
    return active.sum() / len(active) if len(active) else 0.0


def ref_batch_all(e, labels, mask, margin, reduction):
    losses = [
        max(ref_d(e[a], e[p]) - ref_d(e[a], e[n]) + margin, 0.0)
        for a, p, n in ref_triplets(labels, mask)
    ]
    return ref_reduce(losses, reduction)


def ref_batch_hard(e, labels, mask, margin, reduction, soft):
    losses = []
    for a in range(len(labels)):
        if not mask[a]:
            continue
        pos = [
            ref_d(e[a], e[p])
            for p in range(len(labels))
            if p != a and mask[p] and labels[p] == labels[a]
        ]
        neg = [ref_d(e[a], e[n]) for n in range(len(labels)) if mask[n] and labels[n] != labels[a]]
        if not pos or not neg:
            continue
        gap = max(pos) - min(neg)
        losses.append(np.log1p(np.exp(gap)) if soft else max(gap + margin, 0.0))
    return ref_reduce(losses, reduction)


def ref_semi_hard(e, labels, mask, margin, reduction):
    losses = []
    n_ex = len(labels)
    for a, p in itertools.product(range(n_ex), range(n_ex)):
        if a == p or not (mask[a] and mask[p]) or labels[a] != labels[p]:
            continue
        d_ap = ref_d(e[a], e[p])
        neg = [ref_d(e[a], e[n]) for n in range(n_ex) if mask[n] and labels[n] != labels[a]]
        if not neg:
            continue
        semi = [d for d in neg if d > d_ap]
        d_an = min(semi) if semi else max(neg)  # fallback: the farthest negative
        losses.append(max(d_ap - d_an + margin, 0.0))
    return ref_reduce(losses, reduction)


def ref_contrastive_pairs(e, labels, mask, margin, reduction):
    losses = []
    for i, j in itertools.combinations(range(len(labels)), 2):
        if not (mask[i] and mask[j]):
            continue
        d = np.sqrt(ref_d(e[i], e[j]))
        losses.append(d * d if labels[i] == labels[j] else max(margin - d, 0.0) ** 2)
    return ref_reduce(losses, reduction)


# ---------------------------------------------------------------------- fixtures
def random_batch(seed, b=12, dim=8, ids=4, normalise=True, with_mask=False):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(b, dim)).astype(np.float32)
    if normalise:
        e /= np.linalg.norm(e, axis=1, keepdims=True)
    labels = rng.integers(0, ids, size=b).astype(np.int32)
    mask = (rng.random(b) > 0.25) if with_mask else np.ones(b, bool)
    return e, labels, mask


CASES = [(0, False), (1, True), (2, False), (3, True)]


@pytest.mark.parametrize("seed,with_mask", CASES)
@pytest.mark.parametrize("reduction", ["sum", "mean", "mean_active"])
def test_batch_all_matches_numpy(seed, with_mask, reduction):
    e, labels, mask = random_batch(seed, with_mask=with_mask)
    got = triplet.batch_all_triplet_loss(e, labels, MARGIN, jnp.asarray(mask), reduction)
    want = ref_batch_all(e, labels, mask, MARGIN, reduction)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed,with_mask", CASES)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("soft", [False, True])
def test_batch_hard_and_soft_margin_match_numpy(seed, with_mask, reduction, soft):
    e, labels, mask = random_batch(seed, with_mask=with_mask)
    got = triplet.batch_hard_triplet_loss(e, labels, MARGIN, jnp.asarray(mask), reduction, soft)
    want = ref_batch_hard(e, labels, mask, MARGIN, reduction, soft)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed,with_mask", CASES)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_semi_hard_matches_numpy(seed, with_mask, reduction):
    e, labels, mask = random_batch(seed, with_mask=with_mask)
    got = triplet.semi_hard_triplet_loss(e, labels, MARGIN, jnp.asarray(mask), reduction)
    want = ref_semi_hard(e, labels, mask, MARGIN, reduction)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_semi_hard_fallback_takes_farthest_negative():
    # 1-D embeddings: the anchor's positive is farther than every negative,
    # so there is no semi-hard negative and the farthest one (d=0.25) is used.
    e = np.array([[0.0], [1.0], [0.3], [0.5]], np.float32)
    labels = np.array([0, 0, 1, 2])
    mask = np.array([True, True, True, True])
    got = triplet.semi_hard_triplet_loss(e, labels, MARGIN, reduction="sum")
    want = ref_semi_hard(e, labels, mask, MARGIN, "sum")
    # pair (0,1): d_ap=1, negatives 0.09, 0.25 -> fallback 0.25 -> 0.95
    # pair (1,0): d_ap=1, negatives 0.49, 0.25 -> fallback 0.49 -> 0.71
    np.testing.assert_allclose(want, 0.95 + 0.71, rtol=1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("mining", triplet.TRIPLET_MINING)
def test_mined_loss_dispatch_and_jit_grad(mining):
    e, labels, mask = random_batch(5, b=16, dim=6, ids=4)
    refs = {
        "batch_all": lambda: ref_batch_all(e, labels, mask, MARGIN, "mean_active"),
        "batch_hard": lambda: ref_batch_hard(e, labels, mask, MARGIN, "mean", False),
        "soft_margin": lambda: ref_batch_hard(e, labels, mask, MARGIN, "mean", True),
        "semi_hard": lambda: ref_semi_hard(e, labels, mask, MARGIN, "mean"),
    }
    fn = jax.jit(lambda x: triplet.mined_triplet_loss(x, labels, mining, MARGIN))
    np.testing.assert_allclose(fn(e), refs[mining](), rtol=1e-5, atol=1e-6)
    grads = jax.grad(lambda x: triplet.mined_triplet_loss(x, labels, mining, MARGIN))(e)
    assert np.all(np.isfinite(grads))


def test_plain_triplet_loss_is_facenet_sum():
    rng = np.random.default_rng(7)
    a, p, n = (rng.normal(size=(5, 4)).astype(np.float32) for _ in range(3))
    want = sum(max(ref_d(a[i], p[i]) - ref_d(a[i], n[i]) + 0.2, 0.0) for i in range(5))
    np.testing.assert_allclose(triplet.triplet_loss(a, p, n), want, rtol=1e-5)


def test_pairwise_distances_match_numpy():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    want = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(distances.pairwise_squared_distances(x, y), want, rtol=1e-5)
    self_d = np.asarray(distances.pairwise_squared_distances(x))
    assert np.all(np.diag(self_d) == 0)
    np.testing.assert_allclose(distances.squared_distances(x[:4], y), np.diag(want[:4]), rtol=1e-5)
    with pytest.raises(ValueError, match=r"x \[N, D\] and y \[M, D\]"):
        distances.pairwise_squared_distances(x, y[:, :2])
    with pytest.raises(ValueError, match="one shape"):
        distances.squared_distances(x, y)


def test_pair_masks_match_loops():
    labels = np.array([0, 1, 0, 2, 1])
    mask = np.array([1, 1, 1, 0, 1])
    positive, negative = (np.asarray(m) for m in distances.pair_masks(jnp.asarray(labels), mask))
    for i in range(5):
        for j in range(5):
            both = bool(mask[i] and mask[j])
            assert positive[i, j] == (both and i != j and labels[i] == labels[j])
            assert negative[i, j] == (both and labels[i] != labels[j])


@pytest.mark.parametrize("seed,with_mask", CASES)
def test_batch_contrastive_matches_numpy(seed, with_mask):
    e, labels, mask = random_batch(seed, with_mask=with_mask)
    got = contrastive.batch_contrastive_loss(e, labels, 1.0, jnp.asarray(mask))
    np.testing.assert_allclose(got, ref_contrastive_pairs(e, labels, mask, 1.0, "mean"), rtol=1e-5)


def test_pair_contrastive_matches_numpy_and_has_finite_grad_at_zero():
    rng = np.random.default_rng(11)
    e1 = rng.normal(size=(6, 4)).astype(np.float32) * 0.3
    e2 = rng.normal(size=(6, 4)).astype(np.float32) * 0.3
    e2[0] = e1[0]  # a zero distance, where a naive sqrt has a NaN gradient
    same = np.array([1, 0, 1, 0, 0, 1])
    want = np.mean(
        [
            ref_d(e1[i], e2[i]) if same[i] else max(1.0 - np.sqrt(ref_d(e1[i], e2[i])), 0.0) ** 2
            for i in range(6)
        ]
    )
    np.testing.assert_allclose(contrastive.contrastive_loss(e1, e2, same), want, rtol=1e-5)
    g = jax.grad(lambda a: contrastive.contrastive_loss(a, e2, same))(e1)
    assert np.all(np.isfinite(g))


def test_bad_input_is_a_clear_value_error():
    e, labels, _ = random_batch(0)
    with pytest.raises(ValueError, match="batch_all, batch_hard, semi_hard, soft_margin"):
        triplet.mined_triplet_loss(e, labels, "hardest")
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        triplet.mined_triplet_loss(e[None], labels)
    with pytest.raises(ValueError, match=r"labels must be \[B\]"):
        triplet.mined_triplet_loss(e, labels[:3])
    with pytest.raises(ValueError, match="sum, mean, mean_active"):
        triplet.mined_triplet_loss(e, labels, reduction="max")
