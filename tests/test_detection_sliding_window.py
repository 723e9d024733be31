"""Sliding windows convolutionally: one pass equals the classifier on every crop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.detection.sliding_window import convolutionalize, crop_windows, dense_to_conv_kernel
from convjax.models import get_model


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    """Compile time dominates these small cases."""
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def test_convolutional_pass_equals_classifier_on_each_crop():
    fc_model = get_model("window_classifier", num_classes=4)
    conv_model = get_model("window_classifier_conv", num_classes=4)
    params = fc_model.init(jax.random.PRNGKey(0), jnp.zeros((1, 14, 14, 3)))["params"]
    images = jax.random.uniform(
        jax.random.PRNGKey(1), (2, 16, 20, 3)
    )  # the course's 16x16 and a wider one
    conv_out = conv_model.apply({"params": convolutionalize(params)}, images)
    assert conv_out.shape == (2, 2, 4, 4)  # (16 - 14) / 2 + 1 rows, (20 - 14) / 2 + 1 columns
    # The reference: cut every 14x14 window with numpy and classify it on its own.
    images_np = np.asarray(images)
    for b in range(2):
        for i in range(2):
            for j in range(4):
                crop = images_np[b, 2 * i : 2 * i + 14, 2 * j : 2 * j + 14][None]
                expected = fc_model.apply({"params": params}, jnp.asarray(crop))[0]
                np.testing.assert_allclose(conv_out[b, i, j], expected, rtol=1e-4, atol=1e-5)


def test_crop_windows_matches_slicing():
    images = np.arange(2 * 7 * 9 * 2, dtype=np.float32).reshape(2, 7, 9, 2)
    crops = np.asarray(crop_windows(jnp.asarray(images), window=4, stride=2))
    assert crops.shape == (2, 2, 3, 4, 4, 2)
    np.testing.assert_array_equal(crops[1, 1, 2], images[1, 2:6, 4:8])


def test_dense_kernel_reshape_and_errors():
    kernel = np.arange(2 * 2 * 3 * 5, dtype=np.float32).reshape(12, 5)
    conv = np.asarray(dense_to_conv_kernel(jnp.asarray(kernel), (2, 2, 3)))
    x = np.random.default_rng(0).random((2, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(np.einsum("hwc,hwco->o", x, conv), x.reshape(-1) @ kernel, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\[h\*w\*c, out\] = \[12, out\]"):
        dense_to_conv_kernel(jnp.zeros((10, 5)), (2, 2, 3))
    with pytest.raises(ValueError, match="14x14 crops"):
        get_model("window_classifier").init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
