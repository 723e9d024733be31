"""PyTorch-style pooling blocks against numpy, with gradients on odd sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.models.blocks import max_pool


def numpy_max_pool(x, window, stride):
    b, h, w, c = x.shape
    oh, ow = (h - window) // stride + 1, (w - window) // stride + 1
    out = np.empty((b, oh, ow, c), x.dtype)
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride : i * stride + window, j * stride : j * stride + window]
            out[:, i, j] = patch.max(axis=(1, 2))
    return out


@pytest.mark.parametrize("shape", [(1, 5, 8, 2), (2, 7, 7, 3), (1, 6, 6, 1)])
def test_floor_mode_max_pool_forward_and_gradient(shape):
    x = np.random.RandomState(0).rand(*shape).astype(np.float32)
    np.testing.assert_allclose(max_pool(jnp.asarray(x), 2, 2), numpy_max_pool(x, 2, 2))
    grad = np.asarray(jax.grad(lambda v: max_pool(v, 2, 2).sum())(jnp.asarray(x)))
    # Each window routes its gradient to its maximum: one 1 per window, zeros elsewhere.
    assert grad.sum() == numpy_max_pool(x, 2, 2).size
    assert set(np.unique(grad)) <= {0.0, 1.0}
