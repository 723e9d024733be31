"""Attributions against numpy written from the papers, on a tiny conv net.

The net: conv 3x3 (2 -> 4) -> ReLU -> max-pool 2x2 -> conv 3x3 (4 -> 5) -> ReLU (the
Grad-CAM tap A) -> dense -> 3 scores. numpy runs it forward and sends a signal back
by hand: transposed filters, max-pool switches, and the ReLU rule of each method
(gradient: ``g [x > 0]``; deconvnet: ``relu(g)``; guided: ``g [x > 0][g > 0]``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from convjax.viz import attribution

RNG = np.random.default_rng(0)
W1 = RNG.normal(size=(3, 3, 2, 4)).astype(np.float32)
B1 = RNG.normal(size=4).astype(np.float32) * 0.1
W2 = RNG.normal(size=(3, 3, 4, 5)).astype(np.float32) * 0.5
B2 = RNG.normal(size=5).astype(np.float32) * 0.1
WD = RNG.normal(size=(2 * 2 * 5, 3)).astype(np.float32) * 0.5
DN = ("NHWC", "HWIO", "NHWC")


def net(x, tap="a2"):
    """x: [B, 10, 10, 2] -> (scores [B, 3], the tap: A [B, 2, 2, 5] or its input z2)."""
    z1 = lax.conv_general_dilated(x, W1, (1, 1), "VALID", dimension_numbers=DN) + B1
    a1 = jax.nn.relu(z1)  # custom_jvp relu
    p1 = lax.reduce_window(a1, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    z2 = lax.conv_general_dilated(p1, W2, (1, 1), "VALID", dimension_numbers=DN) + B2
    a2 = jnp.maximum(z2, 0.0)  # max(x, 0) written out
    return a2.reshape(a2.shape[0], -1) @ WD, {"a2": a2, "z2": z2, "p1": p1}[tap]


def scores(x):
    return net(x)[0]


# ----------------------------------------------------------------- numpy, by hand


def np_conv(x, w):
    b, h, wd, _ = x.shape
    kh, kw, _, co = w.shape
    out = np.zeros((b, h - kh + 1, wd - kw + 1, co))
    for i in range(kh):
        for j in range(kw):
            out += x[:, i : i + out.shape[1], j : j + out.shape[2]] @ w[i, j]
    return out


def np_conv_back(g, w, in_shape):
    """The transposed filters: d conv / d input applied to g."""
    out = np.zeros(in_shape)
    kh, kw = w.shape[:2]
    for i in range(kh):
        for j in range(kw):
            out[:, i : i + g.shape[1], j : j + g.shape[2]] += g @ w[i, j].T
    return out


def np_forward(x):
    x = np.asarray(x, np.float64)
    z1 = np_conv(x, W1) + B1
    a1 = np.maximum(z1, 0)
    b, h, w, c = a1.shape
    blocks = a1.reshape(b, h // 2, 2, w // 2, 2, c)
    p1 = blocks.max(axis=(2, 4))
    z2 = np_conv(p1, W2) + B2
    a2 = np.maximum(z2, 0)
    return dict(z1=z1, a1=a1, blocks=blocks, p1=p1, z2=z2, a2=a2, s=a2.reshape(b, -1) @ WD)


def relu_back(g, z, rule):
    if rule == "gradient":
        return g * (z > 0)
    if rule == "deconvnet":
        return np.maximum(g, 0)
    return g * (z > 0) * (g > 0)  # guided


def np_backward(x, target, rule):
    f = np_forward(x)
    b = x.shape[0]
    g = np.zeros_like(f["s"])
    g[np.arange(b), target] = 1.0
    g_a2 = (g @ WD.T).reshape(f["a2"].shape)
    g_p1 = np_conv_back(relu_back(g_a2, f["z2"], rule), W2, f["p1"].shape)
    # Max-pool switches: the signal goes to the position of the maximum (the first in
    # row-major order when several tie, e.g. rectified zeros).
    windows = f["blocks"].transpose(0, 1, 3, 5, 2, 4).reshape(*f["p1"].shape, 4)
    first = np.eye(4)[windows.argmax(-1)] * g_p1[..., None]  # [b, h2, w2, c, 4]
    g_a1 = first.reshape(*f["p1"].shape, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(f["a1"].shape)
    return np_conv_back(relu_back(g_a1, f["z1"], rule), W1, x.shape), g_a2, f


@pytest.fixture(scope="module")
def images():
    return RNG.normal(size=(3, 10, 10, 2)).astype(np.float32)


TARGET = np.array([0, 2, 1])


@pytest.mark.parametrize(
    "rule, method",
    [
        ("gradient", attribution.gradient),
        ("deconvnet", attribution.deconvnet),
        ("guided", attribution.guided_backprop),
    ],
)
def test_backward_rules_equal_numpy(images, rule, method):
    expected, _, _ = np_backward(images, TARGET, rule)
    got = np.asarray(method(scores, images, TARGET))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    if rule == "gradient":
        saliency = np.asarray(attribution.saliency_map(got))
        np.testing.assert_allclose(saliency, np.abs(expected).max(axis=-1), rtol=1e-4, atol=1e-5)


def test_the_three_rules_differ(images):
    results = [np_backward(images, TARGET, r)[0] for r in ("gradient", "deconvnet", "guided")]
    assert not np.allclose(results[0], results[1]) and not np.allclose(results[0], results[2])


def test_grad_cam_equals_numpy(images):
    _, g_a2, f = np_backward(images, TARGET, "gradient")
    alpha = g_a2.mean(axis=(1, 2), keepdims=True)  # d y_c / d A^k averaged over positions
    expected = np.maximum((alpha * f["a2"]).sum(-1), 0)
    cam, big = attribution.grad_cam(net, images, TARGET)
    np.testing.assert_allclose(np.asarray(cam), expected, rtol=1e-4, atol=1e-5)
    assert expected.max() > 0
    # The pre-activation tap z2 with after_relu: the same A = relu(z2) and d y / d A.
    pre = lambda x: net(x, "z2")  # noqa: E731
    cam_pre, _ = attribution.grad_cam(pre, images, TARGET, after_relu=True)
    np.testing.assert_allclose(np.asarray(cam_pre), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="not the input of a ReLU"):
        attribution.grad_cam(lambda x: net(x, "p1"), images, TARGET, after_relu=True)
    with pytest.raises(ValueError, match="one forward pass"):  # scores and tap computed apart
        attribution.grad_cam(lambda x: (scores(x), net(x)[1]), images, TARGET)
    assert big.shape == (3, 10, 10)
    np.testing.assert_allclose(
        np.asarray(big),
        np.asarray(jax.image.resize(expected, (3, 10, 10), "bilinear")),
        rtol=1e-4,
        atol=1e-5,
    )


def test_occlusion_equals_a_python_loop(images):
    size, stride, fill = 4, 3, np.array([0.5, -0.25], np.float32)
    got = np.asarray(
        attribution.occlusion(
            scores, images, TARGET, size=size, stride=stride, fill=fill, batch_size=2
        )
    )
    n = (10 - size) // stride + 1
    expected = np.zeros((3, n, n))
    for i in range(n):
        for j in range(n):
            occluded = images.copy()
            occluded[:, i * stride : i * stride + size, j * stride : j * stride + size] = fill
            expected[:, i, j] = np_forward(occluded)["s"][np.arange(3), TARGET]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_integrated_gradients_completeness(images):
    baseline = np.zeros_like(images)
    attr = np.asarray(
        attribution.integrated_gradients(scores, images, TARGET, baseline=baseline, steps=128)
    )
    difference = np_forward(images)["s"] - np_forward(baseline)["s"]
    difference = difference[np.arange(3), TARGET]
    total = attr.reshape(3, -1).sum(axis=1)
    np.testing.assert_array_less(np.abs(total - difference), 0.01 * np.abs(difference))
    # A linear score's attributions are exactly (x - baseline) * weights.
    weights = RNG.normal(size=(10, 10, 2)).astype(np.float32)
    linear = lambda x: jnp.sum(x * weights, axis=(1, 2, 3))[:, None]  # noqa: E731
    attr = attribution.integrated_gradients(linear, images, 0, baseline=0.5, steps=4)
    np.testing.assert_allclose(np.asarray(attr), (images - 0.5) * weights, rtol=1e-5, atol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        attribution.gradient(scores, np.zeros((10, 10, 2)), 0)
    with pytest.raises(ValueError, match="size"):
        attribution.occlusion(scores, np.zeros((1, 10, 10, 2)), 0, size=11, stride=1)
