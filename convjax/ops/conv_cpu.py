"""A 2-D convolution for training on CPU: each direction computed the fastest way XLA allows.

XLA:CPU computes a convolution's forward pass and its input gradient about as fast as
PyTorch, but its weight gradient (a convolution of the input with the output gradient,
run by YNNPACK) is 2-10x slower, and slowest for 1x1 kernels, strided kernels and
small batches. :func:`conv_general_dilated` here is a drop-in replacement for
``jax.lax.conv_general_dilated`` (NHWC images, HWIO kernels) whose ``jax.custom_vjp``
computes, measured per layer shape on this project's CPUs:

- 1x1 kernels (no padding, no groups): forward, input and weight gradients as matrix
  multiplies over the (strided) pixels, ``dW = x^T @ dy`` (5-10x faster than XLA's).
- the weight gradient of a strided kernel or of one input channel as a patch (im2col)
  matrix multiply ``dW[t, c, o] = sum_n patches[n, t, c] * dy[n, o]``, the patches
  gathered in one indexing op (~2x faster);
- the weight gradient of a layer with at most 16 outputs per group summed over chunks
  of 16 examples (XLA then runs it without YNNPACK, 1.5-6x faster);
- the input gradient of a strided kernel as ``s_h * s_w`` stride-1 transposed
  convolutions, one per output phase (the taps ``w[r_h::s_h, r_w::s_w]``), interleaved;
- a kernel window larger than the image (VGG's 2x2 maps): forward as a patch matrix
  multiply and input gradient by col2im (XLA's convolution is 50-90x slower there);
- one input channel: forward as a sum of shifted, scaled images (a stencil XLA fuses
  into one loop; its convolution is ~7x slower there);
- weight gradients read ``x`` and ``dy`` behind fusion boundaries (an optimization
  barrier, or :func:`convjax.ops.fusion.stored` for ``x`` before XLA's convolution);
- everything else with XLA's own convolution.

Every stride, explicit or ``'SAME'``/``'VALID'`` padding, kernel dilation and
``feature_group_count`` is supported; anything else (input dilation, batch groups,
negative padding, layouts other than NHWC/HWIO, non-2-D) goes to
``jax.lax.conv_general_dilated``. Values and both gradients equal
``jax.lax.conv_general_dilated``'s to float32 rounding.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convjax.ops.conv import stencil_conv
from convjax.ops.fusion import always_true, stored

_NHWC = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))


class ConvSpec(NamedTuple):
    """Static description of one convolution (hashable, for ``nondiff_argnums``)."""

    strides: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]
    groups: int
    precision: Any
    ynn: bool = True  # XLA runs convolutions with YNNPACK (see ynn_convolutions)


def _xla_conv(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    return lax.conv_general_dilated(
        x,
        w,
        spec.strides,
        spec.pads,
        rhs_dilation=spec.dilation,
        dimension_numbers=_NHWC,
        feature_group_count=spec.groups,
        precision=spec.precision,
    )


def output_size(x_shape: Sequence[int], w_shape: Sequence[int], spec: ConvSpec) -> tuple[int, int]:
    """(H_out, W_out) of the convolution of x [B, H, W, C] with w [f_h, f_w, C/G, C_out]."""
    sizes = []
    for n, f, (lo, hi), s, d in zip(
        x_shape[1:3], w_shape[:2], spec.pads, spec.strides, spec.dilation, strict=True
    ):
        sizes.append((n + lo + hi - (f - 1) * d - 1) // s + 1)
    return sizes[0], sizes[1]


def patches(x: jax.Array, kernel: tuple[int, int], spec: ConvSpec) -> jax.Array:
    """im2col: x [B, H, W, C] -> [B, H_out, W_out, f_h, f_w, C], the input window under
    each output pixel (zero padding included), gathered in one indexing op."""
    (lo_h, hi_h), (lo_w, hi_w) = spec.pads
    padded = jnp.pad(x, ((0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0)))
    out_h, out_w = output_size(x.shape, (*kernel, 1, 1), spec)
    (s_h, s_w), (d_h, d_w) = spec.strides, spec.dilation
    rows = np.arange(out_h)[:, None] * s_h + np.arange(kernel[0])[None, :] * d_h  # [H', f_h]
    cols = np.arange(out_w)[:, None] * s_w + np.arange(kernel[1])[None, :] * d_w  # [W', f_w]
    return padded[:, rows[:, None, :, None], cols[None, :, None, :], :]


def _is_pointwise(w_shape, spec: ConvSpec) -> bool:
    """A 1x1 kernel without padding or groups: a matrix multiply per (strided) pixel."""
    no_pad = spec.pads == ((0, 0), (0, 0))
    return tuple(w_shape[:2]) == (1, 1) and no_pad and spec.groups == 1


def _subsample(x: jax.Array, spec: ConvSpec) -> jax.Array:
    """The pixels a 1x1 convolution reads: x [B, H, W, C] -> [B, H_out, W_out, C]."""
    (s_h, s_w) = spec.strides
    return x if (s_h, s_w) == (1, 1) else x[:, ::s_h, ::s_w, :]


def _window_exceeds_image(x_shape, w_shape, spec: ConvSpec) -> bool:
    """The (dilated) kernel window is taller or wider than the unpadded image, e.g. a 3x3
    kernel on VGG's 2x2 maps at 32x32 input: XLA:CPU's (Eigen's) convolution takes a
    path there that is 50-90x slower than the patch matrix multiply."""
    return any(
        n < (f - 1) * d + 1
        for n, f, d in zip(x_shape[1:3], w_shape[:2], spec.dilation, strict=True)
    )


def _stencil(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """:func:`convjax.ops.conv.stencil_conv` behind a fusion boundary: stored, the sum is
    not recomputed inside each consumer (a pooling layer's window views)."""
    total = stencil_conv(x, w, spec.strides, spec.pads, spec.precision, spec.dilation)
    return stored(total, always_true(w))


def _forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    if x.shape[-1] == 1 and spec.groups == 1:
        return _stencil(x, w, spec)
    if _is_pointwise(w.shape, spec):
        return jnp.einsum("bhwc,co->bhwo", _subsample(x, spec), w[0, 0], precision=spec.precision)
    if spec.groups == 1 and _window_exceeds_image(x.shape, w.shape, spec):
        cols = patches(x, w.shape[:2], spec)  # [B, H', W', f_h, f_w, C]
        return jnp.einsum("bhwtuc,tuco->bhwo", cols, w, precision=spec.precision)
    return _xla_conv(x, w, spec)


# XLA:CPU hands convolutions with more than 16 input or output features to YNNPACK unless
# XLA_FLAGS turns that off (convjax.host_devices does, for training on CPU hosts); Eigen
# runs the others. YNNPACK's weight gradient is slow when the batch (the gradient's
# input features) is large: in chunks of _SMALL examples a narrow layer's runs 1.5-6x
# faster, and a strided layer's is faster as a patch matrix multiply.
_SMALL = 16
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type="


def ynn_convolutions() -> bool:
    """Whether XLA:CPU runs convolutions with YNNPACK in this process (from XLA_FLAGS)."""
    for flag in os.environ.get("XLA_FLAGS", "").split():
        if flag.startswith(_YNN_FLAG):
            kinds = [kind for kind in flag[len(_YNN_FLAG) :].split(",") if kind]
            if any(kind[0] in "+-" for kind in kinds):  # edits of XLA's default set
                return "-individual_convolution" not in kinds
            return "individual_convolution" in kinds
    return True


def _xla_weight_grad(x: jax.Array, w: jax.Array, dy: jax.Array, spec: ConvSpec) -> jax.Array:
    """XLA's weight-gradient convolution, summed over chunks of _SMALL examples when the
    layer has at most _SMALL outputs per group."""
    kernel = jax.ShapeDtypeStruct(w.shape, dy.dtype)

    def grad(xs, dys):
        return jax.linear_transpose(lambda k: _xla_conv(xs, k, spec), kernel)(dys)[0]

    batch = x.shape[0]
    if w.shape[3] // spec.groups > _SMALL or batch <= _SMALL or not spec.ynn:
        return grad(x, dy)
    total = None
    for start in range(0, batch, _SMALL):
        part = grad(x[start : start + _SMALL], dy[start : start + _SMALL])
        total = part if total is None else total + part
    return total


def _pointwise_weight_grad(pixels: jax.Array, dy: jax.Array, spec: ConvSpec) -> jax.Array:
    """dW [C_in, C_out] of a 1x1 convolution: ``pixels^T @ dy`` over pixels [B, H', W', C_in]
    and dy [B, H', W', C_out].

    XLA:CPU multiplies fastest in the plain orientation ``[m, k] @ [k, n]``: the narrower
    operand is copied transposed (a wide transpose is up to 10x slower than a narrow one),
    and a barrier keeps XLA from folding the result's transpose into the product, which
    it would then run in a 2x slower transposed orientation.
    """
    c_in, c_out = pixels.shape[-1], dy.shape[-1]
    pixels, dy = pixels.reshape(-1, c_in), dy.reshape(-1, c_out)
    if c_out < c_in:
        dw_t = jnp.matmul(dy.T, pixels, precision=spec.precision)  # [C_out, C_in]
        return lax.optimization_barrier(dw_t).T
    return lax.optimization_barrier(jnp.matmul(pixels.T, dy, precision=spec.precision))


def _weight_grad(x: jax.Array, w: jax.Array, dy: jax.Array, spec: ConvSpec) -> jax.Array:
    """dW [f_h, f_w, C/G, C_out].

    1x1: ``x^T @ dy`` over pixels. With YNNPACK convolutions, a strided or one-channel
    layer with more than 16 outputs per group: the patch matrix multiply
    ``patches(x)^T @ dy``, one per group. Otherwise XLA's own weight gradient (in chunks
    of 16 examples for narrow layers under YNNPACK).
    """
    f_h, f_w, c_group, c_out = w.shape
    # Each path reads x and dy transposed (the batch is contracted). Behind a fusion
    # boundary XLA does not recompute their producers (BatchNorm, ReLU, residual adds)
    # in transposed order (ResNet-18-CIFAR trained 1.25x faster, ResNet-50 1.5x). For
    # the 1x1 product an optimization barrier is that boundary, at no cost. Before a
    # convolution XLA moves x's transpose across a barrier (ResNet-18-CIFAR trained 13%
    # slower), so there x is a copy stored by a conditional; dy's barrier holds (2-5%
    # faster than a stored copy).
    if _is_pointwise(w.shape, spec):
        x, dy = lax.optimization_barrier((x, dy))
        return _pointwise_weight_grad(_subsample(x, spec), dy, spec).reshape(w.shape)
    x = stored(x, always_true(dy))
    dy = lax.optimization_barrier(dy)
    strided_or_one_channel = x.shape[-1] == 1 or spec.strides != (1, 1)
    if c_out // spec.groups <= _SMALL or not strided_or_one_channel or not spec.ynn:
        return _xla_weight_grad(x, w, dy, spec)
    groups = spec.groups
    n = dy.shape[0] * dy.shape[1] * dy.shape[2]
    cols = patches(x, (f_h, f_w), spec).reshape(n, f_h * f_w, groups, c_group)
    grads = dy.reshape(n, groups, c_out // groups)
    dw = jnp.einsum("ntgc,ngo->tcgo", cols, grads, precision=spec.precision)
    return dw.reshape(w.shape).astype(x.dtype)


def _pointwise_input_grad(x_shape, w: jax.Array, dy: jax.Array, spec: ConvSpec) -> jax.Array:
    """dx of a 1x1 convolution: ``dy @ W^T``, placed back on the strided pixels."""
    cols = jnp.einsum("bhwo,co->bhwc", dy, w[0, 0], precision=spec.precision)
    (s_h, s_w), (out_h, out_w) = spec.strides, dy.shape[1:3]
    config = (
        (0, 0, 0),
        (0, x_shape[1] - (out_h - 1) * s_h - 1, s_h - 1),
        (0, x_shape[2] - (out_w - 1) * s_w - 1, s_w - 1),
        (0, 0, 0),
    )
    return lax.pad(cols, jnp.zeros((), cols.dtype), config)


def _stride1_transpose(w: jax.Array, dy: jax.Array, in_shape, pads, spec: ConvSpec):
    """dx [in_shape] of the stride-1 convolution of x with w (padding ``pads``), given dy."""
    step = spec._replace(strides=(1, 1), pads=pads)
    x = jax.ShapeDtypeStruct(in_shape, dy.dtype)
    return jax.linear_transpose(lambda v: _xla_conv(v, w, step), x)(dy)[0]


def _input_grad_phases(x_shape, w: jax.Array, dy: jax.Array, spec: ConvSpec) -> jax.Array:
    """dx of a strided convolution (kernel dilation 1), one stride-1 convolution per phase.

    With ``x_r[q] = x_padded[s q + r]`` and ``w_r[m] = w[s m + r]``, the strided
    convolution is ``sum_r conv_stride1(x_r, w_r)``, so ``dx_r`` is the transposed
    stride-1 convolution of dy with ``w_r``; the phases interleave into ``dx``.
    """
    f_h, f_w, _, _ = w.shape
    batch, out_h, out_w, _ = dy.shape
    (s_h, s_w), ((lo_h, hi_h), (lo_w, hi_w)) = spec.strides, spec.pads
    height, width = x_shape[1] + lo_h + hi_h, x_shape[2] + lo_w + hi_w
    blocks_h, blocks_w = -(-height // s_h), -(-width // s_w)
    channels = x_shape[3]
    rows = []
    for r_h in range(s_h):
        phases = []
        for r_w in range(s_w):
            w_r = w[r_h::s_h, r_w::s_w]
            if w_r.shape[0] == 0 or w_r.shape[1] == 0:  # no tap lands on this phase
                phases.append(jnp.zeros((batch, blocks_h, blocks_w, channels), dy.dtype))
                continue
            # Only the first out_h x out_w outputs of the stride-1 convolution are used.
            pads = (
                (0, out_h + w_r.shape[0] - 1 - blocks_h),
                (0, out_w + w_r.shape[1] - 1 - blocks_w),
            )
            phases.append(
                _stride1_transpose(w_r, dy, (batch, blocks_h, blocks_w, channels), pads, spec)
            )
        rows.append(jnp.stack(phases, axis=3))  # [B, blocks_h, blocks_w, s_w, C]
    dx = jnp.stack(rows, axis=2).reshape(batch, blocks_h * s_h, blocks_w * s_w, channels)
    return dx[:, lo_h : lo_h + x_shape[1], lo_w : lo_w + x_shape[2], :]


def _input_grad_col2im(x_shape, w: jax.Array, dy: jax.Array, spec: ConvSpec) -> jax.Array:
    """dx = col2im(dy @ W^T) for a stride-1 convolution: each tap's [B, H_out, W_out, C]
    block of ``dy @ W^T`` is added where that tap read the (padded) input."""
    f_h, f_w, channels, c_out = w.shape
    batch, out_h, out_w, _ = dy.shape
    (lo_h, hi_h), (lo_w, hi_w) = spec.pads
    height, width = x_shape[1] + lo_h + hi_h, x_shape[2] + lo_w + hi_w
    kernel = w.reshape(f_h * f_w, channels, c_out)
    # [B, H', W', taps, C]: the matrix multiply's own output order (a tap-major order
    # would cost a transpose as large as the product).
    cols = jnp.einsum("bhwo,tco->bhwtc", dy, kernel, precision=spec.precision)
    zero = jnp.zeros((), dy.dtype)
    total = None
    for t in range(f_h * f_w):
        i, j = divmod(t, f_w)
        config = ((0, 0, 0), (i, height - i - out_h, 0), (j, width - j - out_w, 0), (0, 0, 0))
        term = lax.pad(cols[:, :, :, t], zero, config)
        total = term if total is None else total + term
    return total[:, lo_h : lo_h + x_shape[1], lo_w : lo_w + x_shape[2], :]


def _input_grad(x_shape, w: jax.Array, dy: jax.Array, spec: ConvSpec) -> jax.Array:
    """dx [B, H, W, C]: 1x1 as ``dy @ W^T``; few input channels (at most 16, stride 1) or
    a window larger than the image by col2im (XLA's transposed convolution is 2-90x
    slower there); strided by phases;
    otherwise XLA's own transposed convolution, as fast as its forward pass."""
    if _is_pointwise(w.shape, spec):
        return _pointwise_input_grad(x_shape, w, dy, spec)
    plain = spec.dilation == (1, 1) and spec.groups == 1
    few_inputs = x_shape[3] <= _SMALL or _window_exceeds_image(x_shape, w.shape, spec)
    if plain and spec.strides == (1, 1) and few_inputs:
        return _input_grad_col2im(x_shape, w, dy, spec)
    if spec.strides == (1, 1) or spec.dilation != (1, 1):
        # Stride 1: the transposed convolution is an ordinary one, as fast as the forward.
        x = jax.ShapeDtypeStruct(x_shape, dy.dtype)
        return jax.linear_transpose(lambda v: _xla_conv(v, w, spec), x)(dy)[0]
    return _input_grad_phases(x_shape, w, dy, spec)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    return _forward(x, w, spec)


def _conv_fwd(x, w, spec):
    return _forward(x, w, spec), (x, w)


def _conv_bwd(spec, residuals, dy):
    x, w = residuals
    return _input_grad(x.shape, w, dy, spec), _weight_grad(x, w, dy, spec)


_conv.defvjp(_conv_fwd, _conv_bwd)
# Called eagerly (e.g. an un-jitted model.init) this compiles one program per
# convolution; inside a jitted step XLA inlines it.
_jit_conv = jax.jit(_conv, static_argnums=2)


def _pairs(value: Sequence[int] | None) -> tuple[int, int]:
    return (1, 1) if value is None else (int(value[0]), int(value[1]))


def _specialised(lhs, rhs, lhs_dilation, dimension_numbers, batch_group_count, padding) -> bool:
    if jnp.ndim(lhs) != 4 or jnp.ndim(rhs) != 4 or batch_group_count != 1:
        return False
    if _pairs(lhs_dilation) != (1, 1) or dimension_numbers is None:
        return False
    if not isinstance(padding, str) and min(p for pair in padding for p in pair) < 0:
        return False
    numbers = lax.conv_dimension_numbers(jnp.shape(lhs), jnp.shape(rhs), dimension_numbers)
    return numbers == _NHWC


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """``jax.lax.conv_general_dilated`` with CPU-fast gradients (same signature, same values).

    lhs: images ``[B, H, W, C_in]``; rhs: kernel ``[f_h, f_w, C_in / groups, C_out]``
    (``dimension_numbers=('NHWC', 'HWIO', 'NHWC')``); returns ``[B, H_out, W_out, C_out]``.
    Other layouts, ``lhs_dilation != 1``, ``batch_group_count != 1``, negative padding and
    ``preferred_element_type`` go to ``jax.lax.conv_general_dilated`` unchanged.
    """
    if preferred_element_type is not None or not _specialised(
        lhs, rhs, lhs_dilation, dimension_numbers, batch_group_count, padding
    ):
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            batch_group_count=batch_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    strides, dilation = _pairs(window_strides), _pairs(rhs_dilation)
    if isinstance(padding, str):
        window = [(f - 1) * d + 1 for f, d in zip(jnp.shape(rhs)[:2], dilation, strict=True)]
        padding = lax.padtype_to_pads(jnp.shape(lhs)[1:3], window, strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    spec = ConvSpec(
        strides, pads, dilation, int(feature_group_count), precision, ynn_convolutions()
    )
    lhs, rhs = jnp.asarray(lhs), jnp.asarray(rhs)
    dtype = jnp.result_type(lhs, rhs)
    return _jit_conv(lhs.astype(dtype), rhs.astype(dtype), spec)
