"""Named edge filters, edge detection on a real image, and learning a Sobel filter."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import skimage.data
from scipy import ndimage, signal

from convjax.ops import (
    EDGE_OPERATORS,
    conv2d,
    edge_detect,
    filter_bank,
    get_filter,
    list_filters,
    to_grayscale,
)


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    """Small shapes: compile time dominates, so skip most XLA optimisations here."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


# Each operator is separable: derivative [1, 0, -1] across, smoothing weights along.
SMOOTHING = {"simple": [1, 1, 1], "sobel": [1, 2, 1], "scharr": [3, 10, 3]}


@pytest.fixture(scope="module")
def camera():
    return skimage.data.camera().astype(np.float64)  # real 512x512 grayscale photo


def _separable_gradients(image, smoothing, mode="constant"):
    """(g_x, g_y) in the course's sign convention, from scipy's 1-D correlations."""
    derivative = [1, 0, -1]
    g_x = ndimage.correlate1d(
        ndimage.correlate1d(image, derivative, axis=1, mode=mode), smoothing, axis=0, mode=mode
    )
    g_y = ndimage.correlate1d(
        ndimage.correlate1d(image, derivative, axis=0, mode=mode), smoothing, axis=1, mode=mode
    )
    return g_x, g_y


def test_named_filters_are_the_textbook_matrices():
    assert list_filters() == sorted(
        ["vertical", "horizontal", "sobel_x", "sobel_y", "scharr_x", "scharr_y"]
    )
    np.testing.assert_array_equal(get_filter("vertical"), [[1, 0, -1], [1, 0, -1], [1, 0, -1]])
    np.testing.assert_array_equal(get_filter("horizontal"), [[1, 1, 1], [0, 0, 0], [-1, -1, -1]])
    np.testing.assert_array_equal(get_filter("sobel_x"), [[1, 0, -1], [2, 0, -2], [1, 0, -1]])
    np.testing.assert_array_equal(get_filter("scharr_x"), [[3, 0, -3], [10, 0, -10], [3, 0, -3]])
    for name in ("sobel", "scharr"):
        np.testing.assert_array_equal(get_filter(f"{name}_y"), get_filter(f"{name}_x").T)
    bank = filter_bank(["sobel_x", "sobel_y"])
    assert bank.shape == (3, 3, 1, 2)
    np.testing.assert_array_equal(bank[:, :, 0, 1], get_filter("sobel_y"))
    get_filter("vertical")[0, 0] = 99.0  # a copy: the table stays intact
    assert get_filter("vertical")[0, 0] == 1.0


def test_sobel_on_camera_matches_scipy_ndimage(camera):
    # scipy's sobel is the image derivative (correlation with [-1, 0, 1]); the course's
    # filters are its negative. mode='constant' = zero padding = padding='same'.
    gradients = np.asarray(
        conv2d(camera[None, :, :, None], filter_bank(["sobel_x", "sobel_y"]), padding="same")
    )[0]
    np.testing.assert_allclose(
        gradients[..., 0], -ndimage.sobel(camera, axis=1, mode="constant"), atol=1e-3
    )
    np.testing.assert_allclose(
        gradients[..., 1], -ndimage.sobel(camera, axis=0, mode="constant"), atol=1e-3
    )
    expected = np.hypot(
        ndimage.sobel(camera, axis=0, mode="constant"),
        ndimage.sobel(camera, axis=1, mode="constant"),
    )
    edges = np.asarray(edge_detect(skimage.data.camera()))
    assert edges.shape == (512, 512) and edges.dtype == np.float32
    np.testing.assert_allclose(edges, expected, rtol=1e-5, atol=1e-3)
    # 'valid' drops the border, where scipy's default reflect padding is the only difference.
    valid = np.asarray(edge_detect(camera, padding="valid"))
    reflect = np.hypot(ndimage.sobel(camera, axis=0), ndimage.sobel(camera, axis=1))
    np.testing.assert_allclose(valid, reflect[1:-1, 1:-1], rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("operator", sorted(EDGE_OPERATORS))
def test_every_operator_matches_separable_scipy(camera, operator):
    crop = camera[100:228, 200:328]
    g_x, g_y = _separable_gradients(crop, SMOOTHING[operator])
    x_name, y_name = EDGE_OPERATORS[operator]
    got = np.asarray(conv2d(crop[None, :, :, None], filter_bank([x_name, y_name]), padding=1))[0]
    np.testing.assert_allclose(got[..., 0], g_x, atol=2e-3)
    np.testing.assert_allclose(got[..., 1], g_y, atol=2e-3)
    np.testing.assert_allclose(
        edge_detect(crop, operator), np.hypot(g_x, g_y), rtol=1e-5, atol=2e-3
    )


def test_rgb_is_converted_to_grayscale_and_batches_work():
    rgb = skimage.data.astronaut()[::4, ::4]  # real 128x128 RGB photo
    luma = rgb.astype(np.float64) @ np.array([0.2989, 0.5870, 0.1140])  # Rec. 601
    np.testing.assert_allclose(to_grayscale(rgb)[..., 0], luma, rtol=1e-5, atol=1e-3)
    g_x, g_y = _separable_gradients(luma, SMOOTHING["sobel"])
    np.testing.assert_allclose(edge_detect(rgb), np.hypot(g_x, g_y), rtol=1e-4, atol=5e-3)
    batch = np.stack([rgb, rgb[::-1]])
    edges = edge_detect(batch, "scharr", padding="valid")
    assert edges.shape == (2, 126, 126)
    np.testing.assert_allclose(edges[1], edge_detect(rgb[::-1], "scharr", "valid"), rtol=1e-6)
    assert edge_detect(luma[:, :, None]).shape == (128, 128)


def test_edge_detect_is_jittable():
    image = jnp.asarray(skimage.data.camera()[:64, :64], jnp.float32)
    jitted = jax.jit(edge_detect, static_argnames=("operator", "padding"))
    np.testing.assert_allclose(jitted(image, operator="sobel"), edge_detect(image), rtol=1e-6)


@pytest.mark.parametrize(
    "image_shape,kwargs,message",
    [
        ((2, 2, 8, 8, 1), {}, r"\[H, W\], \[H, W, C\] or a batch \[B, H, W, C\]"),
        ((8, 8, 4), {}, r"C = 1 \(grayscale\) or 3 \(RGB\).*\(8, 8, 4\)"),
        ((8, 8), {"operator": "canny"}, r"valid: scharr, simple, sobel"),
        ((8, 8), {"padding": "full"}, r"valid: 'valid', 'same'"),
        ((2, 2), {"padding": "valid"}, r"larger than the padded input"),
    ],
)
def test_edge_detect_errors(image_shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        edge_detect(np.zeros(image_shape, np.float32), **kwargs)


def test_unknown_filter_lists_the_names():
    with pytest.raises(ValueError, match=r"valid: horizontal, scharr_x, .*vertical"):
        get_filter("laplace")


def test_learns_sobel_filter_by_gradient_descent():
    """A filter is a parameter: regress input/output pairs made by scipy, recover Sobel."""
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(16, 12, 12)).astype(np.float32)
    target_filter = get_filter("sobel_x")
    targets = np.stack([signal.correlate2d(x, target_filter, mode="valid") for x in inputs])
    inputs, targets = jnp.asarray(inputs[..., None]), jnp.asarray(targets[..., None])

    def loss_fn(w):
        return jnp.mean(jnp.square(conv2d(inputs, w) - targets))

    optimizer = optax.adam(0.1)
    w = jnp.asarray(rng.normal(scale=0.1, size=(3, 3, 1, 1)), jnp.float32)

    @jax.jit
    def train(w):
        def step(carry, _):
            w, opt_state = carry
            loss, grad = jax.value_and_grad(loss_fn)(w)
            updates, opt_state = optimizer.update(grad, opt_state)
            return (optax.apply_updates(w, updates), opt_state), loss

        (w, _), losses = jax.lax.scan(step, (w, optimizer.init(w)), length=600)
        return w, losses

    w, losses = train(w)
    assert float(losses[-1]) < 1e-8 * float(losses[0])
    np.testing.assert_allclose(np.asarray(w)[:, :, 0, 0], target_filter, atol=1e-4)
