"""2-D convolution as the textbook teaches it: NHWC images, HWIO filters, cross-correlation.

``conv2d`` is the fast path (``jax.lax.conv_general_dilated``, or a fused stencil where
that is faster); ``conv2d_reference`` is the sliding window written out in numpy, slow
and obvious, to check it against.
The size helpers follow the textbook formula ``floor((n + 2p - f) / s) + 1``.

Padding spellings, everywhere in this package:

- ``'valid'``: no padding.
- ``'same'``: XLA/TensorFlow ``SAME``: the output has ``ceil(n / s)`` positions and the
  padding is split evenly, the odd row/column going to the bottom/right. With stride 1
  and an odd filter this is the textbook ``p = (f - 1) / 2`` on every side.
- an int ``p >= 0``: ``p`` zeros on every side.
- explicit ``((top, bottom), (left, right))``; for one axis (the size helpers), ``(lo, hi)``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Padding = str | int | Sequence[Sequence[int]]
AxisPadding = str | int | Sequence[int]
Stride = int | Sequence[int]

PADDING_CHOICES = "'valid', 'same', an int p >= 0, or ((top, bottom), (left, right))"
_AXIS_PADDING_CHOICES = "'valid', 'same', an int p >= 0, or (lo, hi)"

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _positive(value: Any, what: str) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{what} must be a positive int; got {value!r}.")
    return int(value)


def as_pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(2, 1) -> (2, 1)``; anything else is a ValueError naming ``what``."""
    if _is_int(value):
        value = (value, value)
    if not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{what} must be a positive int or a pair of them; got {value!r}.")
    return (_positive(value[0], what), _positive(value[1], what))


def _same_axis_padding(n: int, f: int, stride: int) -> tuple[int, int]:
    out = -(-n // stride)  # ceil(n / s)
    total = max((out - 1) * stride + f - n, 0)
    return total // 2, total - total // 2


def _explicit_pair(value: Any, what: str, choices: str) -> tuple[int, int]:
    if not (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(_is_int(p) and p >= 0 for p in value)
    ):
        raise ValueError(f"Unknown {what} {value!r}; valid: {choices}.")
    return int(value[0]), int(value[1])


def axis_padding(padding: AxisPadding, n: int, f: int, stride: int = 1) -> tuple[int, int]:
    """Resolves one axis' padding to ``(lo, hi)`` zeros for input size ``n``, filter ``f``."""
    if isinstance(padding, str):
        spelling = padding.lower()
        if spelling == "valid":
            return 0, 0
        if spelling == "same":
            return _same_axis_padding(n, f, stride)
        raise ValueError(f"Unknown padding {padding!r}; valid: {_AXIS_PADDING_CHOICES}.")
    if _is_int(padding):
        if padding < 0:
            raise ValueError(f"Padding must be >= 0; got {padding}.")
        return int(padding), int(padding)
    return _explicit_pair(padding, "padding", _AXIS_PADDING_CHOICES)


def spatial_padding(
    padding: Padding,
    in_size: tuple[int, int],
    filter_size: tuple[int, int],
    strides: tuple[int, int],
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Resolves a 2-D padding spelling to ``((top, bottom), (left, right))``."""
    if isinstance(padding, str) or _is_int(padding):
        try:
            return tuple(  # type: ignore[return-value]
                axis_padding(padding, n, f, s)
                for n, f, s in zip(in_size, filter_size, strides, strict=True)
            )
        except ValueError:
            raise ValueError(f"Unknown padding {padding!r}; valid: {PADDING_CHOICES}.") from None
    if isinstance(padding, Sequence) and len(padding) == 2:
        if all(isinstance(p, Sequence) and not isinstance(p, str) for p in padding):
            return (
                _explicit_pair(padding[0], "padding", PADDING_CHOICES),
                _explicit_pair(padding[1], "padding", PADDING_CHOICES),
            )
    raise ValueError(f"Unknown padding {padding!r}; valid: {PADDING_CHOICES}.")


def conv_output_size(n: int, f: int, padding: AxisPadding = "valid", stride: int = 1) -> int:
    """Output length of a convolution along one axis: ``floor((n + 2p - f) / s) + 1``.

    With explicit ``(lo, hi)`` padding, ``2p`` is ``lo + hi``. Raises ValueError when
    the filter does not fit in the padded input.
    """
    n = _positive(n, "Input size n")
    f = _positive(f, "Filter size f")
    stride = _positive(stride, "Stride")
    lo, hi = axis_padding(padding, n, f, stride)
    if n + lo + hi < f:
        raise ValueError(
            f"Filter/window of size {f} is larger than the padded input "
            f"({n} + {lo} + {hi} = {n + lo + hi})."
        )
    return (n + lo + hi - f) // stride + 1


def same_padding(f: int) -> int:
    """Textbook 'same' padding ``p = (f - 1) / 2`` for an odd filter size ``f`` (stride 1)."""
    f = _positive(f, "Filter size f")
    if f % 2 == 0:
        raise ValueError(
            f"same_padding needs an odd filter size; got f={f}. An even filter needs "
            "uneven padding: use padding='same', which puts the extra row/column at the "
            "bottom/right."
        )
    return (f - 1) // 2


def conv_param_count(f: int | Sequence[int], c_in: int, c_out: int, bias: bool = True) -> int:
    """Learnable parameters of a conv layer: ``(f * f * c_in + bias) * c_out``.

    ``f`` may be a pair ``(f_h, f_w)`` for a rectangular filter.
    """
    f_h, f_w = as_pair(f, "Filter size f")
    c_in = _positive(c_in, "c_in")
    c_out = _positive(c_out, "c_out")
    return (f_h * f_w * c_in + int(bool(bias))) * c_out


def _shape_of(a: Any) -> tuple[int, ...]:
    return tuple(np.shape(a))


def check_conv_args(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    b_shape: tuple[int, ...] | None,
    stride: Stride,
    padding: Padding,
) -> tuple[tuple[int, int], tuple[tuple[int, int], tuple[int, int]], tuple[int, int]]:
    """Validates conv2d arguments; returns ``(strides, pads, (out_h, out_w))``."""
    if len(x_shape) != 4:
        raise ValueError(
            f"conv2d expects x as NHWC [B, H, W, C_in]; got shape {x_shape} "
            f"(rank {len(x_shape)}). Add a batch axis with x[None] for one image."
        )
    if len(w_shape) != 4:
        raise ValueError(
            f"conv2d expects w as HWIO [f_h, f_w, C_in, C_out]; got shape {w_shape} "
            f"(rank {len(w_shape)})."
        )
    _, h, w, c_in = x_shape
    f_h, f_w, w_c_in, c_out = w_shape
    if min(x_shape) < 1 or min(w_shape) < 1:
        raise ValueError(f"conv2d got an empty array: x {x_shape}, w {w_shape}.")
    if w_c_in != c_in:
        raise ValueError(
            f"Channel mismatch: x has C_in={c_in} channels (shape {x_shape}) but w expects "
            f"{w_c_in} (HWIO shape {w_shape}); w must be [f_h, f_w, {c_in}, C_out]."
        )
    if b_shape is not None and b_shape != (c_out,):
        raise ValueError(f"Bias b must have shape ({c_out},) (one per filter); got {b_shape}.")
    strides = as_pair(stride, "Stride")
    pads = spatial_padding(padding, (h, w), (f_h, f_w), strides)
    out = (
        conv_output_size(h, f_h, pads[0], strides[0]),
        conv_output_size(w, f_w, pads[1], strides[1]),
    )
    return strides, pads, out


CONV_IMPLS = ("auto", "xla", "stencil")


def _xla_conv(x, w, strides, pads, precision):
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=strides,
        padding=pads,
        dimension_numbers=_DIMENSION_NUMBERS,
        precision=precision,
    )


def stencil_conv(
    x: jax.Array,
    w: jax.Array,
    strides: tuple[int, int],
    pads: tuple[tuple[int, int], tuple[int, int]],
    precision: lax.Precision | None = None,
    dilation: tuple[int, int] = (1, 1),
) -> jax.Array:
    """Sum over the f_h * f_w filter taps of a strided shifted view times that tap.

    x: [B, H, W, C_in], w: [f_h, f_w, C_in, C_out] (kernel ``dilation`` spaces the taps)
    -> [B, H_out, W_out, C_out]. XLA fuses this into one elementwise loop. It is the fast
    way on CPU for few input channels: XLA:CPU's convolution with C_in = 1 is ~30x slower
    on a 512x512 image, ~7x on LeNet-5's 32x32 batches.
    """
    f_h, f_w, _, _ = w.shape
    (s_h, s_w), (pad_h, pad_w), (d_h, d_w) = strides, pads, dilation
    x = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
    batch, height, width, c_in = x.shape
    out_h, out_w = (
        (height - (f_h - 1) * d_h - 1) // s_h + 1,
        (width - (f_w - 1) * d_w - 1) // s_w + 1,
    )
    out = None
    for i in range(f_h):
        for j in range(f_w):
            top, left = i * d_h, j * d_w
            shifted = lax.slice(
                x,
                (0, top, left, 0),
                (batch, top + (out_h - 1) * s_h + 1, left + (out_w - 1) * s_w + 1, c_in),
                (1, s_h, s_w, 1),
            )  # [B, out_h, out_w, C_in]
            if c_in == 1:
                term = shifted * w[i, j, 0]
            else:
                term = jnp.einsum("bhwi,io->bhwo", shifted, w[i, j], precision=precision)
            out = term if out is None else out + term
    return out


@functools.partial(jax.jit, static_argnames=("strides", "pads", "precision", "impl"))
def _conv2d(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    strides: tuple[int, int],
    pads: tuple[tuple[int, int], tuple[int, int]],
    precision: lax.Precision | None,
    impl: str,
) -> jax.Array:
    conv = stencil_conv if impl == "stencil" else _xla_conv
    y = conv(x, w, strides, pads, precision)
    return y if b is None else y + b


def _compute_dtype(*arrays: Any) -> Any:
    dtype = jnp.result_type(*arrays)
    return dtype if jnp.issubdtype(dtype, jnp.inexact) else jnp.float32


def conv2d(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None = None,
    stride: Stride = 1,
    padding: Padding = "valid",
    *,
    precision: lax.Precision | None = None,
    impl: str = "auto",
) -> jax.Array:
    """Convolution over volume (cross-correlation, as in deep learning).

    Args:
      x: images ``[B, H, W, C_in]``.
      w: filters ``[f_h, f_w, C_in, C_out]``; each of the ``C_out`` filters spans all
        input channels and gives one output channel.
      b: optional bias ``[C_out]``.
      stride: int or ``(s_h, s_w)``.
      padding: see the module docstring.
      precision: passed to XLA (e.g. ``lax.Precision.HIGHEST`` for full float32 on
        accelerators).
      impl: ``'xla'`` is one ``lax.conv_general_dilated``; ``'stencil'`` sums shifted
        views of ``x`` times each filter tap (fused elementwise; fast for few input
        channels); ``'auto'`` picks ``'stencil'`` for ``C_in = 1`` on CPU, where XLA's
        convolution is slow, and ``'xla'`` otherwise. All give the same numbers.

    Returns:
      ``[B, H_out, W_out, C_out]`` with ``H_out = conv_output_size(H, f_h, ...)``, in the
      promoted dtype of the inputs (float32 for integer inputs).

    Jit-able; ``stride``, ``padding`` and ``impl`` are static (``static_argnames``).
    """
    strides, pads, _ = check_conv_args(
        _shape_of(x), _shape_of(w), None if b is None else _shape_of(b), stride, padding
    )
    if impl not in CONV_IMPLS:
        raise ValueError(f"Unknown conv2d impl {impl!r}; valid: {', '.join(CONV_IMPLS)}")
    if impl == "auto":
        on_cpu = jax.default_backend() == "cpu"
        impl = "stencil" if _shape_of(x)[-1] == 1 and on_cpu else "xla"
    dtype = _compute_dtype(x, w) if b is None else _compute_dtype(x, w, b)
    x = jnp.asarray(x, dtype)
    w = jnp.asarray(w, dtype)
    b = None if b is None else jnp.asarray(b, dtype)
    return _conv2d(x, w, b, strides, pads, precision, impl)


def conv2d_reference(
    x: Any, w: Any, b: Any | None = None, stride: Stride = 1, padding: Padding = "valid"
) -> np.ndarray:
    """The textbook sliding window, in float64 numpy: slow, for checking ``conv2d``.

    Same arguments and output shape as :func:`conv2d`. Pads ``x`` with zeros, then for
    every output position takes the ``f_h x f_w x C_in`` window under each filter,
    multiplies element-wise and sums.
    """
    strides, pads, (out_h, out_w) = check_conv_args(
        _shape_of(x), _shape_of(w), None if b is None else _shape_of(b), stride, padding
    )
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    f_h, f_w, _, c_out = w.shape
    s_h, s_w = strides
    x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    out = np.zeros((x.shape[0], out_h, out_w, c_out))
    for i in range(out_h):
        for j in range(out_w):
            window = x[:, i * s_h : i * s_h + f_h, j * s_w : j * s_w + f_w, :]
            for k in range(c_out):
                out[:, i, j, k] = np.sum(window * w[:, :, :, k], axis=(1, 2, 3))
    if b is not None:
        out += np.asarray(b, np.float64)
    return out
