"""Style-transfer costs against numpy written straight from each paper's formula."""

import jax.numpy as jnp
import numpy as np
import pytest

from convjax.losses import style as S

RNG = np.random.default_rng(0)


def _np_gram(a):
    """a: [H, W, C] -> [C, C]: G_kk' = sum_i sum_j a_ijk a_ijk', written as loops over k."""
    h, w, c = a.shape
    g = np.zeros((c, c), np.float64)
    for k in range(c):
        for kp in range(c):
            g[k, kp] = np.sum(a[:, :, k].astype(np.float64) * a[:, :, kp])
    return g


def _np_content(c_feat, g_feat, mode):
    h, w, c = c_feat.shape
    sq = np.sum((c_feat.astype(np.float64) - g_feat) ** 2)
    if mode == "gatys":  # 1/2 sum (F - P)^2
        return 0.5 * sq
    if mode == "course":  # 1/(4 nH nW nC) sum
        return sq / (4 * h * w * c)
    # PyTorch tutorial: F.mse_loss(input, target), the mean over all entries.
    return np.mean((c_feat.astype(np.float64) - g_feat) ** 2)


def _np_style(s_feat, g_feat, mode):
    h, w, c = s_feat.shape
    gs, gg = _np_gram(s_feat), _np_gram(g_feat)
    n_filters, m_positions = c, h * w
    if mode == "gatys":  # E_l = 1/(4 N^2 M^2) sum (G - A)^2
        return np.sum((gg - gs) ** 2) / (4 * n_filters**2 * m_positions**2)
    if mode == "course":  # 1/(2 nH nW nC)^2 sum (G_S - G_G)^2
        return np.sum((gs - gg) ** 2) / (2 * h * w * c) ** 2
    # PyTorch tutorial: gram.div(a*b*c*d) with a = 1, then mse over the C x C matrix.
    feats_s = s_feat.transpose(2, 0, 1).reshape(c, h * w).astype(np.float64)
    feats_g = g_feat.transpose(2, 0, 1).reshape(c, h * w).astype(np.float64)
    ts = feats_s @ feats_s.T / (c * h * w)
    tg = feats_g @ feats_g.T / (c * h * w)
    return np.mean((tg - ts) ** 2)


def test_gram_matrix_equals_numpy_loops():
    a = RNG.normal(size=(2, 5, 4, 3)).astype(np.float32)
    got = np.asarray(S.gram_matrix(jnp.asarray(a)))
    assert got.shape == (2, 3, 3)
    for b in range(2):
        np.testing.assert_allclose(got[b], _np_gram(a[b]), rtol=1e-5, atol=1e-5)
    # A Gram matrix is symmetric.
    np.testing.assert_allclose(got, got.transpose(0, 2, 1), rtol=1e-6)


@pytest.mark.parametrize("mode", S.NORMALIZATIONS)
def test_content_cost_equals_numpy(mode):
    c = RNG.normal(size=(3, 6, 5, 4)).astype(np.float32)
    g = RNG.normal(size=(3, 6, 5, 4)).astype(np.float32)
    got = np.asarray(S.content_cost(jnp.asarray(c), jnp.asarray(g), mode))
    want = [_np_content(c[b], g[b], mode) for b in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("mode", S.NORMALIZATIONS)
def test_style_layer_cost_equals_numpy(mode):
    s = np.abs(RNG.normal(size=(2, 7, 6, 5))).astype(np.float32)
    g = np.abs(RNG.normal(size=(2, 7, 6, 5))).astype(np.float32)
    target = S.gram_matrix(jnp.asarray(s))
    got = np.asarray(S.style_layer_cost(target, jnp.asarray(g), mode))
    want = [_np_style(s[b], g[b], mode) for b in range(2)]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_gatys_and_course_style_normalisations_coincide():
    s = RNG.normal(size=(1, 4, 3, 6)).astype(np.float32)
    g = RNG.normal(size=(1, 4, 3, 6)).astype(np.float32)
    target = S.gram_matrix(jnp.asarray(s))
    np.testing.assert_allclose(
        S.style_layer_cost(target, jnp.asarray(g), "gatys"),
        S.style_layer_cost(target, jnp.asarray(g), "course"),
        rtol=1e-6,
    )


@pytest.mark.parametrize("mode", S.NORMALIZATIONS)
def test_style_cost_is_lambda_weighted_sum_over_layers(mode):
    shapes = {"conv1_1": (8, 8, 3), "conv2_1": (4, 4, 5), "conv3_1": (2, 2, 7)}
    weights = {"conv1_1": 0.5, "conv2_1": 0.2, "conv3_1": 0.3}
    style = {k: RNG.normal(size=(2, *v)).astype(np.float32) for k, v in shapes.items()}
    gen = {k: RNG.normal(size=(2, *v)).astype(np.float32) for k, v in shapes.items()}
    grams = {k: S.gram_matrix(jnp.asarray(v)) for k, v in style.items()}
    got = np.asarray(
        S.style_cost(grams, {k: jnp.asarray(v) for k, v in gen.items()}, weights, mode)
    )
    want = [
        sum(weights[k] * _np_style(style[k][b], gen[k][b], mode) for k in shapes) for b in range(2)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("kind", ["squared", "abs"])
def test_total_variation_equals_numpy_loops(kind):
    x = RNG.uniform(size=(2, 5, 6, 3)).astype(np.float32)
    pen = np.square if kind == "squared" else np.abs
    want = []
    for b in range(2):
        total = 0.0
        for i in range(5):
            for j in range(6):
                if i + 1 < 5:
                    total += pen(x[b, i + 1, j] - x[b, i, j]).sum()
                if j + 1 < 6:
                    total += pen(x[b, i, j + 1] - x[b, i, j]).sum()
        want.append(total)
    got = np.asarray(S.total_variation_cost(jnp.asarray(x), kind))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    per_pixel = np.asarray(S.total_variation_cost(jnp.asarray(x), kind, reduction="mean"))
    np.testing.assert_allclose(per_pixel, np.asarray(want) / (5 * 6), rtol=1e-5)
    # A constant image has no variation.
    assert float(S.total_variation_cost(jnp.ones((1, 4, 4, 3)), kind)[0]) == 0.0


def test_total_cost_is_alpha_beta_gamma_combination():
    jc, js, tv = jnp.array([2.0, 3.0]), jnp.array([5.0, 7.0]), jnp.array([11.0, 13.0])
    got = S.total_cost(jc, js, alpha=10.0, beta=40.0, tv=tv, gamma=0.5)
    np.testing.assert_allclose(got, [10 * 2 + 40 * 5 + 0.5 * 11, 10 * 3 + 40 * 7 + 0.5 * 13])
    np.testing.assert_allclose(S.total_cost(jc, js, alpha=1.0, beta=2.0), [12.0, 17.0])


def test_bad_inputs_raise_clear_errors():
    a = jnp.zeros((1, 4, 4, 3))
    with pytest.raises(ValueError, match="gatys, course, pytorch"):
        S.content_cost(a, a, "johnson")
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        S.gram_matrix(jnp.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="same shape"):
        S.content_cost(a, jnp.zeros((1, 4, 4, 2)))
    with pytest.raises(ValueError, match=r"\[B, 3, 3\]"):
        S.style_layer_cost(jnp.zeros((1, 2, 2)), a)
    with pytest.raises(ValueError, match="no cost for layer"):
        S.weighted_layer_sum({"conv1_1": jnp.zeros(1)}, {"conv9_9": 1.0})
    with pytest.raises(ValueError, match="squared, abs"):
        S.total_variation_cost(a, "l3")


def test_pytorch_mode_matches_the_pytorch_tutorial_code():
    torch = pytest.importorskip(
        "torch", reason='PyTorch CPU is an optional reference: pip install -e ".[torch]"'
    )
    import torch.nn.functional as F

    def tutorial_gram(x):  # the tutorial's gram_matrix, verbatim in spirit
        a, b, c, d = x.size()
        features = x.view(a * b, c * d)
        return torch.mm(features, features.t()).div(a * b * c * d)

    s = RNG.normal(size=(1, 6, 5, 4)).astype(np.float32)
    g = RNG.normal(size=(1, 6, 5, 4)).astype(np.float32)
    ts, tg = (torch.from_numpy(v.transpose(0, 3, 1, 2).copy()) for v in (s, g))
    want_style = F.mse_loss(tutorial_gram(tg), tutorial_gram(ts)).item()
    want_content = F.mse_loss(tg, ts).item()
    got_style = S.style_layer_cost(S.gram_matrix(jnp.asarray(s)), jnp.asarray(g), "pytorch")
    got_content = S.content_cost(jnp.asarray(s), jnp.asarray(g), "pytorch")
    np.testing.assert_allclose(float(got_style[0]), want_style, rtol=1e-5)
    np.testing.assert_allclose(float(got_content[0]), want_content, rtol=1e-5)
