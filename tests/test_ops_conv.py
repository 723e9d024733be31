"""conv2d: fast path == textbook sliding window == scipy.signal.correlate2d (== PyTorch)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from convjax.ops import (
    conv2d,
    conv2d_reference,
    conv_output_size,
    conv_param_count,
    same_padding,
)


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    """Small shapes: compile time dominates, so skip most XLA optimisations here."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


# (padding, stride, c_in, c_out, filter (f_h, f_w)) — paddings of every spelling.
CASES = [
    ("valid", 1, 1, 1, (3, 3)),
    ("valid", 2, 3, 4, (3, 3)),
    ("same", 1, 3, 2, (3, 3)),
    ("same", 2, 2, 5, (4, 4)),
    ("SAME", (2, 1), 1, 3, (3, 2)),
    (1, 1, 4, 2, (5, 5)),
    (2, 3, 3, 1, (3, 3)),
    (((1, 0), (2, 1)), 1, 2, 2, (2, 3)),
    (((0, 2), (1, 1)), (1, 2), 3, 3, (3, 3)),
]


def _independent_pads(padding, n, f, s):
    """(lo, hi) zeros from the definitions, written independently of convjax."""
    if isinstance(padding, str) and padding.lower() == "valid":
        return 0, 0
    if isinstance(padding, str):  # XLA/TF SAME: ceil(n / s) outputs, extra at the end
        total = max((math.ceil(n / s) - 1) * s + f - n, 0)
        return total // 2, total - total // 2
    return padding, padding


def _scipy_conv(x, w, b, stride, padding):
    """Sum over input channels of scipy.signal.correlate2d, for each filter, subsampled."""
    s_h, s_w = (stride, stride) if isinstance(stride, int) else stride
    f_h, f_w, c_in, c_out = w.shape
    if isinstance(padding, tuple):
        pads = padding
    else:
        pads = (
            _independent_pads(padding, x.shape[1], f_h, s_h),
            _independent_pads(padding, x.shape[2], f_w, s_w),
        )
    xp = np.pad(x.astype(np.float64), ((0, 0), pads[0], pads[1], (0, 0)))
    outs = []
    for image in xp:
        maps = [
            sum(signal.correlate2d(image[..., c], w[..., c, k], mode="valid") for c in range(c_in))
            for k in range(c_out)
        ]
        outs.append(np.stack(maps, axis=-1)[::s_h, ::s_w])
    out = np.stack(outs)
    return out if b is None else out + b


@pytest.mark.parametrize("impl", ["xla", "stencil", "auto"])
@pytest.mark.parametrize("padding,stride,c_in,c_out,fsize", CASES)
def test_fast_path_equals_reference_and_scipy(padding, stride, c_in, c_out, fsize, impl):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 10, c_in)).astype(np.float32)
    w = rng.normal(size=(*fsize, c_in, c_out)).astype(np.float32)
    b = rng.normal(size=(c_out,)).astype(np.float32)

    fast = np.asarray(conv2d(x, w, b, stride=stride, padding=padding, impl=impl))
    reference = conv2d_reference(x, w, b, stride=stride, padding=padding)
    library = _scipy_conv(x, w, b, stride, padding)

    assert fast.shape == reference.shape == library.shape
    np.testing.assert_allclose(reference, library, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fast, library, rtol=1e-5, atol=1e-4)


def test_textbook_vertical_edge_example():
    # The course's 6x6 image (bright left half) * vertical-edge filter -> 4x4 of 0,30,30,0.
    image = np.array([[10, 10, 10, 0, 0, 0]] * 6, np.float32)[None, :, :, None]
    vertical = np.array([[1, 0, -1]] * 3, np.float32)[:, :, None, None]
    expected = np.array([[0, 30, 30, 0]] * 4, np.float32)
    np.testing.assert_array_equal(np.asarray(conv2d(image, vertical))[0, :, :, 0], expected)
    np.testing.assert_array_equal(conv2d_reference(image, vertical)[0, :, :, 0], expected)


def test_conv_matches_pytorch():
    torch = pytest.importorskip(
        "torch", reason='PyTorch CPU is an optional reference: pip install -e ".[torch]"'
    )
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 11, 8, 3)).astype(np.float32)
    w = rng.normal(size=(3, 5, 3, 4)).astype(np.float32)
    b = rng.normal(size=(4,)).astype(np.float32)
    pads = ((2, 1), (0, 3))
    xt = torch.nn.functional.pad(torch.from_numpy(x).permute(0, 3, 1, 2), (0, 3, 2, 1))
    wt = torch.from_numpy(w).permute(3, 2, 0, 1)
    expected = torch.nn.functional.conv2d(xt, wt, torch.from_numpy(b), stride=(2, 3))
    got = np.asarray(conv2d(x, w, b, stride=(2, 3), padding=pads))
    np.testing.assert_allclose(got, expected.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-4)


def test_output_size_formula_and_actual_shapes():
    # The course's simple ConvNet: 39 -3x3 s1-> 37 -5x5 s2-> 17 -5x5 s2-> 7.
    assert conv_output_size(39, 3, 0, 1) == 37
    assert conv_output_size(37, 5, 0, 2) == 17
    assert conv_output_size(17, 5, 0, 2) == 7
    assert conv_output_size(6, 3, "valid") == 4
    assert conv_output_size(7, 3, (2, 0), 2) == 4  # floor((7 + 2 - 3) / 2) + 1
    x = np.zeros((1, 13, 13, 1), np.float32)
    for n, f, p, s in itertools.product((5, 8, 13), (1, 2, 3, 5), (0, 1, 2, "same"), (1, 2, 3)):
        if isinstance(p, int) and n + 2 * p < f:
            continue
        expected = math.ceil(n / s) if p == "same" else (n + 2 * p - f) // s + 1
        assert conv_output_size(n, f, p, s) == expected, (n, f, p, s)
        w = np.zeros((f, f, 1, 2), np.float32)
        y = jax.eval_shape(lambda x, w: conv2d(x, w, stride=s, padding=p), x[:, :n, :n], w)  # noqa: B023
        assert y.shape == (1, expected, expected, 2), (n, f, p, s)


def test_same_padding_keeps_size_at_stride_one():
    for f in (1, 3, 5, 7):
        p = same_padding(f)
        assert p == (f - 1) // 2
        assert conv_output_size(10, f, p, 1) == 10
        x = np.ones((1, 10, 10, 1), np.float32)
        w = np.ones((f, f, 1, 1), np.float32)
        np.testing.assert_array_equal(conv2d(x, w, padding=p), conv2d(x, w, padding="same"))
    with pytest.raises(ValueError, match="odd filter size"):
        same_padding(4)


def test_param_count():
    # Course quiz: 10 filters of 3x3x3 with biases have 280 parameters.
    assert conv_param_count(3, 3, 10) == 280
    assert conv_param_count(5, 6, 16) == (5 * 5 * 6 + 1) * 16
    assert conv_param_count(5, 6, 16, bias=False) == 5 * 5 * 6 * 16
    assert conv_param_count((1, 7), 64, 32) == (7 * 64 + 1) * 32


def test_jit_grad_and_dtypes():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
    jitted = jax.jit(conv2d, static_argnames=("stride", "padding"))
    np.testing.assert_allclose(
        jitted(x, w, stride=2, padding="same"),
        conv2d_reference(x, w, stride=2, padding="same"),
        rtol=1e-5,
        atol=1e-4,
    )
    # d/dw sum(conv2d(x, w)) = sum of the windows under each filter tap.
    xs = np.asarray(x, np.float64)
    taps = np.array(
        [[xs[:, i : i + 6, j : j + 6, :].sum(axis=(0, 1, 2)) for j in range(3)] for i in range(3)]
    )
    for impl in ("xla", "stencil"):
        grad = jax.jit(jax.grad(lambda w: conv2d(x, w, impl=impl).sum()))(w)  # noqa: B023
        np.testing.assert_allclose(grad, np.repeat(taps[..., None], 4, axis=-1), rtol=1e-4)

    ints = np.arange(16, dtype=np.int32).reshape(1, 4, 4, 1)
    assert conv2d(ints, np.ones((2, 2, 1, 1), np.int32)).dtype == jnp.float32
    assert conv2d(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,message",
    [
        ((8, 8, 3), (3, 3, 3, 1), {}, r"NHWC \[B, H, W, C_in\].*rank 3"),
        ((1, 8, 8, 3), (3, 3, 3), {}, r"HWIO \[f_h, f_w, C_in, C_out\]"),
        ((1, 8, 8, 3), (3, 3, 1, 4), {}, r"Channel mismatch: x has C_in=3.*\[f_h, f_w, 3, C_out\]"),
        ((1, 8, 8, 1), (3, 3, 1, 1), {"padding": "full"}, r"'valid', 'same', an int p"),
        ((1, 8, 8, 1), (3, 3, 1, 1), {"padding": -1}, r"valid: 'valid', 'same'"),
        ((1, 8, 8, 1), (3, 3, 1, 1), {"padding": (1, 1)}, r"\(\(top, bottom\), \(left, right\)\)"),
        ((1, 4, 4, 1), (5, 5, 1, 1), {}, r"larger than the padded input"),
        ((1, 8, 8, 1), (3, 3, 1, 1), {"stride": 0}, r"Stride must be a positive int"),
        ((1, 8, 8, 1), (3, 3, 1, 2), {"b": np.zeros(3)}, r"Bias b must have shape \(2,\)"),
        ((1, 8, 8, 1), (3, 3, 1, 1), {"impl": "fft"}, r"valid: auto, xla, stencil"),
    ],
)
def test_errors_name_the_expected_input(x_shape, w_shape, kwargs, message):
    x, w = np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32)
    with pytest.raises(ValueError, match=message):
        conv2d(x, w, **kwargs)
    if "impl" not in kwargs:
        with pytest.raises(ValueError, match=message):
            conv2d_reference(x, w, **kwargs)


def test_size_helper_errors():
    with pytest.raises(ValueError, match=r"valid: 'valid', 'same', an int p >= 0, or \(lo, hi\)"):
        conv_output_size(8, 3, "half")
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv_output_size(3, 7, 1)
    with pytest.raises(ValueError, match="Filter size f must be a positive int"):
        conv_param_count(0, 3, 3)
