"""Max and average pooling over NHWC images, with their output size and a reference.

Pooling slides a ``window`` over each channel independently (``C_out = C_in``) and keeps
the maximum or the mean. ``stride`` defaults to ``window`` (the usual ``f = s = 2``).
Padding takes the spellings of :mod:`convjax.ops.conv`; max pooling ignores padded
positions, average pooling counts them as zeros unless ``count_include_pad=False``
(the default ``True`` matches ``flax.linen.avg_pool`` and PyTorch). ``ceil_mode=True``
rounds the max-pooled size up as PyTorch's ``MaxPool2d(ceil_mode=True)`` does.

:func:`max_pool` is the one max pooling of the package (the model zoo uses it too). It is
the elementwise maximum of the ``f_h * f_w`` strided views of the padded input (one fused
loop), and its gradient goes to the first maximum of each window in row-major order, as
in PyTorch and XLA's ``select_and_scatter``, computed from the same views (XLA:CPU's
``reduce_window``/``select_and_scatter`` run several times slower).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convjax.ops.conv import (
    AxisPadding,
    Padding,
    Stride,
    as_pair,
    conv_output_size,
    spatial_padding,
)
from convjax.ops.fusion import stored

Window = int | tuple[int, int]


def pool_output_size(
    n: int, window: int, stride: int | None = None, padding: AxisPadding = "valid"
) -> int:
    """Output length of pooling along one axis: ``floor((n + 2p - f) / s) + 1``, ``s = f``
    when ``stride`` is None."""
    return conv_output_size(n, window, padding, window if stride is None else stride)


def _ceil_mode_pad(n: int, f: int, s: int, lo: int, hi: int) -> int:
    """Bottom/right padding giving PyTorch's ceil-mode output size (the last window must
    start inside the input or its top/left padding)."""
    out = -(-(n + lo + hi - f) // s) + 1
    if (out - 1) * s >= n + lo:
        out -= 1
    return max(hi, (out - 1) * s + f - n - lo)


def check_pool_args(
    x_shape: tuple[int, ...],
    window: Window,
    stride: Stride | None,
    padding: Padding,
    ceil_mode: bool = False,
) -> tuple[
    tuple[int, int], tuple[int, int], tuple[tuple[int, int], tuple[int, int]], tuple[int, int]
]:
    """Validates pooling arguments; returns ``(windows, strides, pads, (out_h, out_w))``.

    With ``ceil_mode`` the bottom/right padding grows so the output size is rounded up.
    """
    if len(x_shape) != 4:
        raise ValueError(
            f"Pooling expects x as NHWC [B, H, W, C]; got shape {x_shape} "
            f"(rank {len(x_shape)}). Add a batch axis with x[None] for one image."
        )
    if min(x_shape) < 1:
        raise ValueError(f"Pooling got an empty array of shape {x_shape}.")
    windows = as_pair(window, "Pooling window")
    strides = windows if stride is None else as_pair(stride, "Stride")
    pads = spatial_padding(padding, x_shape[1:3], windows, strides)
    for axis, (lo, hi), f in zip(("height", "width"), pads, windows, strict=True):
        if max(lo, hi) >= f:
            raise ValueError(
                f"Padding {(lo, hi)} along {axis} must be smaller than the window {f}: "
                "otherwise a window could see only padding."
            )
    if ceil_mode:
        pads = tuple(  # type: ignore[assignment]
            (lo, _ceil_mode_pad(n, f, s, lo, hi))
            for n, f, s, (lo, hi) in zip(x_shape[1:3], windows, strides, pads, strict=True)
        )
    out = tuple(
        conv_output_size(n, f, p, s)
        for n, f, p, s in zip(x_shape[1:3], windows, pads, strides, strict=True)
    )
    return windows, strides, pads, out  # type: ignore[return-value]


def _lowest(dtype: Any) -> Any:
    # A concrete numpy scalar (not a traced array) lets JAX recognise the monoid and use
    # its differentiable reduce_window_max.
    if jnp.issubdtype(dtype, jnp.floating):
        return np.array(-np.inf, dtype)
    return np.array(jnp.iinfo(dtype).min, dtype)


def _window_views(x: jax.Array, windows, strides, pads) -> list[jax.Array]:
    """The f_h * f_w strided views [B, H_out, W_out, C] of x padded with its lowest value,
    one per window position (row-major)."""
    padded = lax.pad(x, _lowest(x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
    _, height, width, channels = padded.shape
    out_h = (height - windows[0]) // strides[0] + 1
    out_w = (width - windows[1]) // strides[1] + 1
    views = []
    for i in range(windows[0]):
        for j in range(windows[1]):
            limit = (x.shape[0], i + (out_h - 1) * strides[0] + 1, j + (out_w - 1) * strides[1] + 1)
            views.append(lax.slice(padded, (0, i, j, 0), (*limit, channels), (1, *strides, 1)))
    return views


def _first_argmax(views: list[jax.Array]) -> jax.Array:
    """Index (int8/int32 [B, H_out, W_out, C]) of each window's first maximum, row-major."""
    best, index = views[0], jnp.zeros(views[0].shape, jnp.int8 if len(views) < 128 else jnp.int32)
    for t, view in enumerate(views[1:], start=1):
        better = view > best  # strict: an equal later value does not win
        best = jnp.where(better, view, best)
        index = jnp.where(better, jnp.asarray(t, index.dtype), index)
    return index


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _max_pool_views(x: jax.Array, windows, strides, pads, in_hw) -> jax.Array:
    return functools.reduce(lax.max, _window_views(x, windows, strides, pads))


def _max_pool_fwd(x, windows, strides, pads, in_hw):
    views = _window_views(x, windows, strides, pads)
    # The winner is recorded here, from the same values the maximum came from: comparing
    # against the output later could fail where XLA recomputes x with other rounding.
    return functools.reduce(lax.max, views), _first_argmax(views)


def _tiled_bwd(windows, in_hw, index, dy):
    """The gradient of non-overlapping windows (stride = window, no padding): every input
    pixel reads its own window's gradient once (XLA fuses this without recomputation)."""
    (f_h, f_w), (batch, out_h, out_w, channels) = windows, dy.shape

    def tile(a):  # [B, H', W', C] -> [B, H' f_h, W' f_w, C], each value over its window
        a = jnp.broadcast_to(a[:, :, None, :, None, :], (batch, out_h, f_h, out_w, f_w, channels))
        return a.reshape(batch, out_h * f_h, out_w * f_w, channels)

    tap = (jnp.arange(f_h)[:, None] * f_w + jnp.arange(f_w)[None, :]).astype(index.dtype)
    tap = jnp.tile(tap, (out_h, out_w))[None, :, :, None]  # [1, H' f_h, W' f_w, 1]
    dx = jnp.where(tile(index) == tap, tile(dy), jnp.zeros((), dy.dtype))
    # Floor mode: rows/columns past the last window get no gradient.
    return jnp.pad(dx, ((0, 0), (0, in_hw[0] - out_h * f_h), (0, in_hw[1] - out_w * f_w), (0, 0)))


def _max_pool_bwd(windows, strides, pads, in_hw, index, dy):
    """Each window's gradient goes to its first maximum; each tap's share is placed back
    by interior padding (a strided view's transpose) and the taps are summed."""
    # Stored: XLA would redo the forward comparisons (and the ReLU below) for every pixel
    # of every window (LeNet-5 trained 1.18x faster). Indices are never negative.
    index = stored(index, index[0, 0, 0, 0] >= 0)
    if tuple(strides) == tuple(windows) and pads == ((0, 0), (0, 0)):
        return (_tiled_bwd(windows, in_hw, index, dy),)
    (lo_h, hi_h), (lo_w, hi_w) = pads
    height, width = in_hw[0] + lo_h + hi_h, in_hw[1] + lo_w + hi_w
    out_h, out_w = dy.shape[1:3]
    zero = jnp.zeros((), dy.dtype)
    dx = None
    for t in range(windows[0] * windows[1]):
        i, j = divmod(t, windows[1])
        bottom = height - i - (out_h - 1) * strides[0] - 1
        right = width - j - (out_w - 1) * strides[1] - 1
        config = ((0, 0, 0), (i, bottom, strides[0] - 1), (j, right, strides[1] - 1), (0, 0, 0))
        term = lax.pad(jnp.where(index == t, dy, zero), zero, config)
        dx = term if dx is None else dx + term
    crop = ((0, 0, 0), (-lo_h, -hi_h, 0), (-lo_w, -hi_w, 0), (0, 0, 0))
    return (lax.pad(dx, zero, crop),)


_max_pool_views.defvjp(_max_pool_fwd, _max_pool_bwd)


@functools.partial(jax.jit, static_argnames=("windows", "strides", "pads"))
def _max_pool(x: jax.Array, windows, strides, pads) -> jax.Array:
    if not jnp.issubdtype(x.dtype, jnp.inexact):  # integers: nothing to differentiate
        return functools.reduce(lax.max, _window_views(x, windows, strides, pads))
    return _max_pool_views(x, windows, strides, pads, tuple(x.shape[1:3]))


@functools.partial(jax.jit, static_argnames=("windows", "strides", "pads", "count_include_pad"))
def _avg_pool(x: jax.Array, windows, strides, pads, count_include_pad: bool) -> jax.Array:
    dims, steps, full_pads = (1, *windows, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0))
    sums = lax.reduce_window(x, np.array(0, x.dtype), lax.add, dims, steps, full_pads)
    if count_include_pad:
        return sums / (windows[0] * windows[1])
    # Static shapes, so XLA folds the per-position counts into a constant.
    ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
    counts = lax.reduce_window(ones, np.array(0, x.dtype), lax.add, dims, steps, full_pads)
    return sums / counts


def max_pool(
    x: jax.Array,
    window: Window = 2,
    stride: Stride | None = None,
    padding: Padding = "valid",
    ceil_mode: bool = False,
) -> jax.Array:
    """Max pooling. x: ``[B, H, W, C]`` -> ``[B, H_out, W_out, C]``.

    ``window`` and ``stride`` are ints or ``(h, w)`` pairs (stride defaults to window);
    padded positions never win. ``ceil_mode=True`` rounds ``H_out``/``W_out`` up, padding
    the bottom/right edge (PyTorch's ``ceil_mode``; GoogLeNet uses it).
    """
    windows, strides, pads, _ = check_pool_args(np.shape(x), window, stride, padding, ceil_mode)
    return _max_pool(jnp.asarray(x), windows, strides, pads)


def avg_pool(
    x: jax.Array,
    window: Window = 2,
    stride: Stride | None = None,
    padding: Padding = "valid",
    count_include_pad: bool = True,
) -> jax.Array:
    """Average pooling. x: ``[B, H, W, C]`` -> ``[B, H_out, W_out, C]`` (float).

    ``count_include_pad=False`` divides each window by its number of real (unpadded)
    positions instead of the window size.
    """
    windows, strides, pads, _ = check_pool_args(np.shape(x), window, stride, padding)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.float32)
    return _avg_pool(x, windows, strides, pads, bool(count_include_pad))


def _pool_reference(
    x: Any,
    reduce: str,
    window: Window,
    stride: Stride | None,
    padding: Padding,
    count_include_pad: bool,
    ceil_mode: bool = False,
) -> np.ndarray:
    windows, strides, pads, (out_h, out_w) = check_pool_args(
        np.shape(x), window, stride, padding, ceil_mode
    )
    x = np.asarray(x, np.float64)
    b, h, w, c = x.shape
    fill = -np.inf if reduce == "max" else 0.0
    padded = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=fill)
    real = np.pad(np.ones((h, w)), pads, constant_values=0.0)
    (f_h, f_w), (s_h, s_w) = windows, strides
    out = np.zeros((b, out_h, out_w, c))
    for i in range(out_h):
        for j in range(out_w):
            rows, cols = slice(i * s_h, i * s_h + f_h), slice(j * s_w, j * s_w + f_w)
            window_values = padded[:, rows, cols, :]
            if reduce == "max":
                out[:, i, j, :] = window_values.max(axis=(1, 2))
            else:
                count = f_h * f_w if count_include_pad else real[rows, cols].sum()
                out[:, i, j, :] = window_values.sum(axis=(1, 2)) / count
    return out


def max_pool_reference(
    x: Any,
    window: Window = 2,
    stride: Stride | None = None,
    padding: Padding = "valid",
    ceil_mode: bool = False,
) -> np.ndarray:
    """Sliding-window max pooling in float64 numpy (slow; for checking :func:`max_pool`)."""
    return _pool_reference(x, "max", window, stride, padding, True, ceil_mode)


def avg_pool_reference(
    x: Any,
    window: Window = 2,
    stride: Stride | None = None,
    padding: Padding = "valid",
    count_include_pad: bool = True,
) -> np.ndarray:
    """Sliding-window average pooling in float64 numpy (for checking :func:`avg_pool`)."""
    return _pool_reference(x, "avg", window, stride, padding, count_include_pad)
