"""Collapse diagnostics against numpy, and the collapse warning."""

import itertools
import warnings

import jax
import numpy as np
import pytest

from convjax.face import diagnostics


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def reference(e, labels, margin):
    e = e.astype(np.float64)
    d = ((e[:, None] - e[None]) ** 2).sum(-1)
    n = len(labels)
    pos = [d[i, j] for i, j in itertools.permutations(range(n), 2) if labels[i] == labels[j]]
    neg = [d[i, j] for i, j in itertools.permutations(range(n), 2) if labels[i] != labels[j]]
    triplets = [
        (a, p, q)
        for a, p, q in itertools.product(range(n), repeat=3)
        if a != p and labels[a] == labels[p] and labels[q] != labels[a]
    ]
    active = [d[a, p] - d[a, q] + margin > 0 for a, p, q in triplets]
    return {
        "mean_pos_dist": np.mean(pos),
        "mean_neg_dist": np.mean(neg),
        "fraction_active": np.mean(active),
        "spread": np.mean(((e - e.mean(0)) ** 2).sum(-1)),
    }


def clustered(seed, ids=4, per_id=4, dim=16, noise=0.15):
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(ids, dim)))
    labels = np.repeat(np.arange(ids), per_id)
    return unit(centres[labels] + noise * rng.normal(size=(len(labels), dim))), labels


@pytest.mark.parametrize("noise", [0.15, 1.0])
def test_diagnostics_match_numpy(noise):
    e, labels = clustered(0, noise=noise)
    got = jax.jit(lambda x: diagnostics.embedding_diagnostics(x, labels, 0.2))(e)
    want = reference(e, labels, 0.2)
    for key in diagnostics.DIAGNOSTICS:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_collapse_warning_fires_on_collapsed_embeddings():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 4)
    point = unit(rng.normal(size=(1, 16)))
    collapsed = unit(point + 1e-3 * rng.normal(size=(16, 16)))
    metrics = {
        k: float(v) for k, v in diagnostics.embedding_diagnostics(collapsed, labels, 0.2).items()
    }
    assert metrics["spread"] < 1e-4
    with pytest.warns(diagnostics.CollapseWarning, match="collapsed at step 7"):
        assert diagnostics.warn_if_collapsed(metrics, margin=0.2, step=7)


@pytest.mark.parametrize("kind", ["trained", "random_init"])
def test_collapse_warning_is_silent_on_healthy_embeddings(kind):
    if kind == "trained":
        e, labels = clustered(2)
    else:
        rng = np.random.default_rng(3)
        e, labels = unit(rng.normal(size=(16, 16))), np.repeat(np.arange(4), 4)
    metrics = {k: float(v) for k, v in diagnostics.embedding_diagnostics(e, labels, 0.2).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", diagnostics.CollapseWarning)
        assert not diagnostics.warn_if_collapsed(metrics, margin=0.2)
