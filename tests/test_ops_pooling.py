"""max_pool / avg_pool: fast path == sliding-window reference == independent numpy/skimage."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from skimage.measure import block_reduce

from convjax.ops import (
    avg_pool,
    avg_pool_reference,
    max_pool,
    max_pool_reference,
    pool_output_size,
)


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    """Small shapes: compile time dominates, so skip most XLA optimisations here."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


# (window, stride, padding)
CASES = [
    (2, None, "valid"),
    (3, 1, "valid"),
    (3, 2, "valid"),
    ((2, 3), (1, 2), "valid"),
    (3, 2, "same"),
    (2, 2, "same"),
    (3, 1, 1),
    (3, 2, ((1, 0), (2, 1))),
]


@pytest.fixture
def images():
    return np.random.default_rng(0).normal(size=(2, 9, 11, 3)).astype(np.float32)


@pytest.mark.parametrize("window,stride,padding", CASES)
def test_pooling_equals_reference(images, window, stride, padding):
    got_max = np.asarray(max_pool(images, window, stride, padding))
    np.testing.assert_allclose(got_max, max_pool_reference(images, window, stride, padding))
    for include in (True, False):
        got = np.asarray(avg_pool(images, window, stride, padding, count_include_pad=include))
        expected = avg_pool_reference(images, window, stride, padding, include)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got_max.shape == (2, *_expected_size((9, 11), window, stride, padding), 3)


def _expected_size(in_size, window, stride, padding):
    """floor((n + lo + hi - f) / s) + 1 per axis, or ceil(n / s) for 'same'."""
    windows = (window, window) if isinstance(window, int) else window
    strides = windows if stride is None else stride
    strides = (strides, strides) if isinstance(strides, int) else strides
    sizes = []
    for axis, (n, f, s) in enumerate(zip(in_size, windows, strides, strict=True)):
        if padding == "same":
            sizes.append(math.ceil(n / s))
            continue
        lo, hi = {"valid": (0, 0)}.get(padding, None) or (
            (padding, padding) if isinstance(padding, int) else padding[axis]
        )
        sizes.append((n + lo + hi - f) // s + 1)
    return tuple(sizes)


@pytest.mark.parametrize("window,stride", [(2, 1), (3, 1), (3, 2), (2, 3)])
def test_valid_pooling_equals_numpy_sliding_windows(images, window, stride):
    windows = sliding_window_view(images, (window, window), axis=(1, 2))[:, ::stride, ::stride]
    np.testing.assert_allclose(max_pool(images, window, stride), windows.max(axis=(-2, -1)))
    np.testing.assert_allclose(
        avg_pool(images, window, stride), windows.mean(axis=(-2, -1)), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("window", [2, 3])
def test_non_overlapping_pooling_equals_reshape_and_block_reduce(images, window):
    b, h, w, c = images.shape
    h_out, w_out = h // window, w // window
    cropped = images[:, : h_out * window, : w_out * window]
    blocks = cropped.reshape(b, h_out, window, w_out, window, c)
    np.testing.assert_allclose(max_pool(images, window), blocks.max(axis=(2, 4)))
    np.testing.assert_allclose(
        avg_pool(images, window), blocks.mean(axis=(2, 4)), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        max_pool(cropped, window), block_reduce(cropped, (1, window, window, 1), np.max)
    )
    np.testing.assert_allclose(
        avg_pool(cropped, window),
        block_reduce(cropped, (1, window, window, 1), np.mean),
        rtol=1e-5,
        atol=1e-6,
    )


def test_textbook_max_pool_example():
    # The course's 4x4 example, f = 2, s = 2.
    x = np.array([[1, 3, 2, 1], [2, 9, 1, 1], [1, 3, 2, 3], [5, 6, 1, 2]], np.float32)
    np.testing.assert_array_equal(max_pool(x[None, :, :, None], 2)[0, :, :, 0], [[9, 2], [6, 3]])
    np.testing.assert_allclose(
        avg_pool(x[None, :, :, None], 2)[0, :, :, 0], [[3.75, 1.25], [3.75, 2.0]]
    )


def test_pooling_matches_pytorch(images):
    torch = pytest.importorskip(
        "torch", reason='PyTorch CPU is an optional reference: pip install -e ".[torch]"'
    )
    xt = torch.from_numpy(images).permute(0, 3, 1, 2)
    nhwc = lambda t: t.permute(0, 2, 3, 1).numpy()
    fn = torch.nn.functional
    np.testing.assert_allclose(
        max_pool(images, 3, 2, 1), nhwc(fn.max_pool2d(xt, 3, 2, padding=1)), rtol=1e-6
    )
    for include in (True, False):
        expected = fn.avg_pool2d(xt, 3, 2, padding=1, count_include_pad=include)
        got = avg_pool(images, 3, 2, 1, count_include_pad=include)
        np.testing.assert_allclose(got, nhwc(expected), rtol=1e-5, atol=1e-6)


def test_output_size_against_shapes():
    assert pool_output_size(4, 2) == 2
    assert pool_output_size(5, 3, 1) == 3  # course example: 5x5, f = 3, s = 1
    assert pool_output_size(28, 2, 2) == 14
    x = np.zeros((1, 13, 13, 1), np.float32)
    for n in (4, 7, 13):
        for f, s, p in [(2, None, 0), (3, 2, 1), (2, 3, 0), (3, 1, "same"), (2, 2, "same")]:
            stride = f if s is None else s
            expected = math.ceil(n / stride) if p == "same" else (n + 2 * p - f) // stride + 1
            assert pool_output_size(n, f, s, p) == expected
            for pool in (max_pool, avg_pool):
                y = jax.eval_shape(lambda x: pool(x, f, s, p), x[:, :n, :n])  # noqa: B023
                assert y.shape == (1, expected, expected, 1)


def test_jit_grad_and_dtypes(images):
    jitted = jax.jit(max_pool, static_argnames=("window", "stride", "padding"))
    np.testing.assert_allclose(
        jitted(images, 3, 2, "same"), max_pool_reference(images, 3, 2, "same")
    )
    # The gradient of a non-overlapping max pool is 1 at each window's argmax.
    x = images[:, :8, :8]
    grad = np.asarray(jax.jit(jax.grad(lambda x: max_pool(x, 2).sum()))(jnp.asarray(x)))
    blocks = x.reshape(2, 4, 2, 4, 2, 3).transpose(0, 1, 3, 5, 2, 4).reshape(2, 4, 4, 3, 4)
    one_hot = np.eye(4)[blocks.argmax(-1)].reshape(2, 4, 4, 3, 2, 2)
    np.testing.assert_array_equal(grad, one_hot.transpose(0, 1, 4, 2, 5, 3).reshape(x.shape))
    grad_avg = jax.jit(jax.grad(lambda x: avg_pool(x, 2).sum()))(jnp.asarray(x))
    np.testing.assert_allclose(grad_avg, np.full(x.shape, 0.25))

    ints = np.arange(16, dtype=np.int32).reshape(1, 4, 4, 1)
    assert max_pool(ints, 2, padding="same").dtype == jnp.int32
    np.testing.assert_array_equal(max_pool(ints, 2)[0, :, :, 0], [[5, 7], [13, 15]])
    assert avg_pool(ints, 2).dtype == jnp.float32


def _lax_max_pool(x, windows, strides, pads):
    """XLA's reduce_window max: its gradient is select_and_scatter (first maximum wins)."""
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, *windows, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0))
    )


@pytest.mark.parametrize(
    "window,stride,pads",
    [
        (2, 2, ((0, 0), (0, 0))),
        (3, 2, ((1, 1), (1, 1))),  # ResNet stem
        (3, 2, ((0, 0), (0, 0))),  # AlexNet, floor mode drops the last row
        (3, 1, ((1, 1), (1, 1))),  # Inception branch
        (3, 2, ((0, 1), (0, 1))),  # GoogLeNet ceil mode
        (2, 3, ((0, 0), (0, 0))),  # stride > window: unread rows
    ],
)
def test_max_pool_gradient_equals_xla_select_and_scatter(window, stride, pads):
    rng = np.random.default_rng(window * 10 + stride)
    # Small integers: many ties, which must go to the first maximum of each window.
    x = jnp.asarray(rng.integers(0, 4, size=(2, 9, 10, 3)).astype(np.float32))
    dy = jnp.asarray(rng.normal(size=max_pool(x, window, stride, pads).shape).astype(np.float32))
    got, vjp = jax.vjp(lambda v: max_pool(v, window, stride, pads), x)
    want, vjp_ref = jax.vjp(lambda v: _lax_max_pool(v, (window,) * 2, (stride,) * 2, pads), x)
    np.testing.assert_array_equal(got, want)
    # Overlapping windows add their gradients in a different order: float rounding only.
    np.testing.assert_allclose(vjp(dy)[0], vjp_ref(dy)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size,window,stride,padding", [(13, 3, 2, 0), (9, 3, 2, 1), (14, 2, 2, 0)])
def test_ceil_mode_matches_pytorch(size, window, stride, padding):
    torch = pytest.importorskip(
        "torch", reason='PyTorch CPU is an optional reference: pip install -e ".[torch]"'
    )
    x = np.random.default_rng(size).normal(size=(2, size, size + 1, 3)).astype(np.float32)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).requires_grad_()
    yt = torch.nn.functional.max_pool2d(xt, window, stride, padding, ceil_mode=True)
    dy = np.random.default_rng(1).normal(size=yt.shape).astype(np.float32)
    yt.backward(torch.from_numpy(dy))
    y, vjp = jax.vjp(lambda v: max_pool(v, window, stride, padding, ceil_mode=True), x)
    np.testing.assert_array_equal(y, yt.detach().permute(0, 2, 3, 1).numpy())
    np.testing.assert_allclose(
        vjp(jnp.asarray(dy).transpose(0, 2, 3, 1))[0],
        xt.grad.permute(0, 2, 3, 1).numpy(),
        rtol=1e-6,
        atol=1e-6,
    )
    np.testing.assert_array_equal(y, max_pool_reference(x, window, stride, padding, ceil_mode=True))


@pytest.mark.parametrize(
    "shape,kwargs,message",
    [
        ((8, 8, 3), {}, r"NHWC \[B, H, W, C\].*rank 3"),
        ((1, 3, 3, 1), {"window": 4}, r"larger than the padded input"),
        ((1, 8, 8, 1), {"padding": "full"}, r"valid: 'valid', 'same', an int p"),
        ((1, 8, 8, 1), {"window": 2, "padding": 2}, r"smaller than the window 2"),
        ((1, 8, 8, 1), {"window": 0}, r"Pooling window must be a positive int"),
        ((1, 8, 8, 1), {"stride": (1, 0)}, r"Stride must be a positive int"),
    ],
)
def test_errors(shape, kwargs, message):
    x = np.zeros(shape, np.float32)
    for pool in (max_pool, avg_pool, max_pool_reference, avg_pool_reference):
        with pytest.raises(ValueError, match=message):
            pool(x, **kwargs)
