"""The CPU convolution equals jax.lax.conv_general_dilated: values and both gradients.

The reference is lax's own convolution and its autodiff (an independent implementation:
XLA's convolution and JAX's transpose rules), for every stride, padding, dilation and
group count the model zoo uses.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from convjax import host_devices
from convjax.ops import conv_cpu
from convjax.ops.conv_cpu import conv_general_dilated

NHWC = ("NHWC", "HWIO", "NHWC")

# (name, x shape [B, H, W, C_in], kernel (f_h, f_w), C_out, strides, padding, dilation, groups)
CASES = [
    ("lenet C_in=1 5x5", (3, 12, 12, 1), (5, 5), 6, (1, 1), "VALID", (1, 1), 1),
    ("C_in=1 3x3 stride 2 same", (2, 9, 10, 1), (3, 3), 4, (2, 2), "SAME", (1, 1), 1),
    (
        "C_in=1 3x2 dilation 2 uneven pad",
        (2, 9, 8, 1),
        (3, 2),
        4,
        (1, 2),
        ((1, 2), (2, 0)),
        (2, 2),
        1,
    ),
    ("3x3 pad 1", (2, 8, 8, 5), (3, 3), 7, (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    ("3x3 stride 2 pad 1 (resnet)", (2, 9, 8, 4), (3, 3), 6, (2, 2), ((1, 1), (1, 1)), (1, 1), 1),
    ("1x1", (2, 6, 6, 8), (1, 1), 5, (1, 1), "VALID", (1, 1), 1),
    ("1x1 widening (bottleneck conv3)", (2, 5, 6, 3), (1, 1), 8, (1, 1), "VALID", (1, 1), 1),
    ("1x1 stride 2 (downsample)", (2, 7, 6, 8), (1, 1), 5, (2, 2), "VALID", (1, 1), 1),
    ("7x7 stride 2 pad 3 (stem)", (2, 15, 14, 3), (7, 7), 8, (2, 2), ((3, 3), (3, 3)), (1, 1), 1),
    (
        "11x11 stride 4 pad 2 (alexnet)",
        (1, 31, 31, 3),
        (11, 11),
        4,
        (4, 4),
        ((2, 2), (2, 2)),
        (1, 1),
        1,
    ),
    ("5x5 pad 2 groups 2 (alexnet)", (2, 7, 7, 6), (5, 5), 8, (1, 1), ((2, 2), (2, 2)), (1, 1), 2),
    ("3x3 pad 1 groups 2", (2, 5, 6, 4), (3, 3), 6, (1, 1), ((1, 1), (1, 1)), (1, 1), 2),
    ("3x3 stride 2 groups 3", (2, 9, 9, 6), (3, 3), 6, (2, 2), "SAME", (1, 1), 3),
    ("5x5 pad 2 (inception)", (2, 7, 7, 4), (5, 5), 3, (1, 1), ((2, 2), (2, 2)), (1, 1), 1),
    ("3x3 dilation 2", (2, 10, 9, 3), (3, 3), 4, (1, 1), ((2, 2), (2, 2)), (2, 2), 1),
    ("3x3 stride 2 dilation 2", (2, 11, 12, 3), (3, 3), 4, (2, 2), ((1, 2), (2, 1)), (2, 2), 1),
    ("2x3 asymmetric same stride (2, 1)", (2, 8, 7, 3), (2, 3), 5, (2, 1), "SAME", (1, 1), 1),
    ("5x5 stride 3, unread trailing rows", (2, 12, 13, 2), (5, 5), 3, (3, 3), "VALID", (1, 1), 1),
    ("full-size kernel (fc as conv)", (2, 5, 5, 4), (5, 5), 6, (1, 1), "VALID", (1, 1), 1),
    ("1x1 pad 1", (2, 5, 6, 4), (1, 1), 3, (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    ("narrow layer, batch 34 (chunked)", (34, 6, 6, 3), (3, 3), 5, (1, 1), "SAME", (1, 1), 1),
    ("1x1 stride 2 groups 2", (2, 7, 7, 4), (1, 1), 6, (2, 2), "VALID", (1, 1), 2),
    ("1x1 stride 3, odd size", (2, 8, 7, 5), (1, 1), 3, (3, 3), "VALID", (1, 1), 1),
    ("3x3 pad 1 on 2x2 maps (vgg at 32x32)", (2, 2, 2, 20), (3, 3), 6, (1, 1), "SAME", (1, 1), 1),
    ("3x3 pad 1 on 1x3 maps", (3, 1, 3, 4), (3, 3), 5, (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
]


def _inputs(x_shape, kernel, c_out, groups, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((*kernel, x_shape[-1] // groups, c_out)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(w)


def _conv(fn, strides, padding, dilation, groups):
    return lambda x, w: fn(
        x,
        w,
        strides,
        padding,
        rhs_dilation=dilation,
        dimension_numbers=NHWC,
        feature_group_count=groups,
        precision=lax.Precision.HIGHEST,
    )


@pytest.mark.parametrize("name,x_shape,kernel,c_out,strides,padding,dilation,groups", CASES)
def test_values_and_gradients_equal_lax(
    name, x_shape, kernel, c_out, strides, padding, dilation, groups
):
    x, w = _inputs(x_shape, kernel, c_out, groups)
    fast = jax.jit(_conv(conv_general_dilated, strides, padding, dilation, groups))
    reference = _conv(lax.conv_general_dilated, strides, padding, dilation, groups)
    y, vjp = jax.vjp(fast, x, w)
    y_ref, vjp_ref = jax.vjp(reference, x, w)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=2e-6 * np.abs(y_ref).max())
    dy = jnp.asarray(np.random.default_rng(1).standard_normal(y.shape).astype(np.float32))
    for got, want in zip(vjp(dy), vjp_ref(dy), strict=True):
        assert got.shape == want.shape
        # float32 rounding of sums in another order: ~1e-7 of the largest entry.
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6 * np.abs(want).max())


@pytest.mark.parametrize("ynn", [True, False])
@pytest.mark.parametrize(
    "name", ["3x3 stride 2 groups 3", "lenet C_in=1 5x5", "narrow layer, batch 34 (chunked)"]
)
def test_both_xla_convolution_libraries(monkeypatch, ynn, name):
    """The formulations chosen with and without XLA's YNNPACK convolutions agree with lax."""
    monkeypatch.setattr(conv_cpu, "ynn_convolutions", lambda: ynn)
    case = next(c for c in CASES if c[0] == name)
    test_values_and_gradients_equal_lax(*case)


def test_ynn_convolutions_reads_xla_flags(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert conv_cpu.ynn_convolutions()
    monkeypatch.setenv(
        "XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
    )
    assert not conv_cpu.ynn_convolutions()
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot")
    assert not conv_cpu.ynn_convolutions()
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=-individual_dot")
    assert conv_cpu.ynn_convolutions()
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
    assert not conv_cpu.ynn_convolutions()


def test_training_flags_keep_convolutions_on_eigen():
    """The flags a CPU run sets (conftest sets them too) are set for the installed jaxlib
    and take XLA's convolutions off YNNPACK, whose weight gradient is 2-4x slower."""
    flags = host_devices.conv_library_flags()
    assert flags, "no convolution-library flag for this jaxlib: re-measure and extend the gate"
    assert not conv_cpu.ynn_convolutions()
    x, w = jnp.ones((4, 8, 8, 32)), jnp.ones((3, 3, 32, 32))
    program = jax.jit(
        lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)
    )
    text = program.lower(x, w).compile().as_text()
    assert "convolution(" in text and "ynn_fusion" not in text


def test_gradients_under_vmap_and_jit():
    conv = _conv(conv_general_dilated, (2, 2), ((1, 1), (1, 1)), (1, 1), 1)
    reference = _conv(lax.conv_general_dilated, (2, 2), ((1, 1), (1, 1)), (1, 1), 1)
    x, w = _inputs((3, 2, 9, 9, 4), (3, 3), 5, 1)  # a leading vmapped axis of 3
    ws = jnp.stack([w, 2 * w, -w])

    def loss(fn):
        return lambda x, w: jnp.sum(jnp.sin(fn(x, w)))

    got = jax.jit(jax.vmap(jax.grad(loss(conv), argnums=(0, 1))))(x, ws)
    want = jax.vmap(jax.grad(loss(reference), argnums=(0, 1)))(x, ws)
    for g, r in zip(got, want, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-4)


def test_unspecialised_arguments_fall_back_to_lax():
    x, w = _inputs((2, 6, 6, 3), (3, 3), 4, 1)
    # Input dilation and NCHW layouts are not specialised: they must still be exact.
    args = dict(
        window_strides=(1, 1), padding=((1, 1), (1, 1)), lhs_dilation=(2, 2), dimension_numbers=NHWC
    )
    np.testing.assert_allclose(
        conv_general_dilated(x, w, **args), lax.conv_general_dilated(x, w, **args), rtol=1e-5
    )
    x_nchw = jnp.transpose(x, (0, 3, 1, 2))
    w_oihw = jnp.transpose(w, (3, 2, 0, 1))
    np.testing.assert_allclose(
        conv_general_dilated(x_nchw, w_oihw, (1, 1), "SAME"),
        lax.conv_general_dilated(x_nchw, w_oihw, (1, 1), "SAME"),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("c_in,where", [(20, "dy"), (1, "dy"), (1, "w"), (20, "w")])
def test_a_nan_spreads_exactly_as_in_lax(c_in, where):
    """Stored activations sit behind an always-true conditional (ops.fusion): a NaN in
    the kernel or the output gradient gives NaNs at exactly the entries lax's do."""
    x, w = _inputs((2, 6, 6, c_in), (3, 3), 5, 1)
    dy = np.ones((2, 6, 6, 5), np.float32)
    if where == "dy":
        dy[0, 0, 0, 0] = np.nan
    else:
        w = w.at[0, 0, 0, 0].set(np.nan)
    fast = jax.jit(_conv(conv_general_dilated, (1, 1), "SAME", (1, 1), 1))
    reference = _conv(lax.conv_general_dilated, (1, 1), "SAME", (1, 1), 1)
    (y, vjp), (y_ref, vjp_ref) = jax.vjp(fast, x, w), jax.vjp(reference, x, w)
    ours, theirs = (y, *vjp(jnp.asarray(dy))), (y_ref, *vjp_ref(jnp.asarray(dy)))
    for got, want, name in zip(ours, theirs, ("y", "dx", "dw"), strict=True):
        if name == "dx":  # lax's transposed convolution also multiplies its zero padding
            assert np.isnan(got).any() == np.isnan(want).any()
            assert not (np.isnan(got) & ~np.isnan(want)).any()
        else:
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    # y and dx (a NaN in w) or dx and dW (in dy) have NaNs; y and dW finite entries too.
    assert sum(bool(np.isnan(v).any()) for v in theirs) == 2
    assert np.isfinite(theirs[0]).any() and np.isfinite(theirs[2]).any()
