"""Exact receptive-field geometry, traced from any JAX function of an image.

A value computed from an image ``[B, H, W, C]`` that keeps two spatial axes has,
at every position ``(y, x)``, a window of input pixels it depends on. Along each
axis the window of position ``p`` is ``[lo + p * jump, hi + p * jump)``: an affine
function of the position, with a *jump* (effective stride) and a start offset
``lo`` that includes the padding (it is negative where the window reaches over
the top or left border). Different channels may see different windows: the
channels of an Inception block's concatenation come from branches with
different kernels, so ``lo``/``hi`` are kept per channel (``[C, 2]``, or ``[1, 2]``
when every channel sees the same window).

:func:`receptive_fields` traces a function with :func:`jax.make_jaxpr` and walks
the jaxpr from the image to every output:

- ``conv_general_dilated`` and ``reduce_window_*`` (pooling) grow the window by
  ``(kernel - 1) * dilation * jump``, shift it by ``-pad_lo * jump`` and multiply the
  jump by the stride; every output channel sees the union over the input channels
  of its feature group;
- ``pad`` and ``slice`` shift the window (and a slice's stride scales the jump);
- element-wise ops (``add`` of a residual block, ``mul``, ``max``, ``select_n``...)
  take the union of their operands' windows: a skip connection's window is the
  union of both paths;
- ``concatenate`` along channels keeps each operand's windows for its channels;
- ``dot_general`` over channels (a 1x1 convolution written as a matmul) unites the
  channels; anything that mixes spatial positions (a mean over H and W, a flatten,
  a gather) makes the value :data:`GLOBAL`: it has no spatial receptive field.

The windows are exact up to the hull: every input pixel outside a unit's window
provably does not reach it, and pixels on each of the window's four edges do (for
generic weights), which ``tests/test_viz_geometry.py`` checks on the model zoo.
:func:`crop` cuts a window out of an image, clipped at the borders, with a mask of
the part that lies inside the image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

GLOBAL = "global"  # depends on the image, but every position mixes the whole input
_EMPTY = 1 << 40  # an empty window is [_EMPTY, -_EMPTY)


class Window(NamedTuple):
    """Input rows ``[top, bottom)`` and columns ``[left, right)`` (may reach past borders)."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def size(self) -> tuple[int, int]:
        return (self.bottom - self.top, self.right - self.left)


@dataclasses.dataclass(frozen=True, eq=False)
class Field:
    """Receptive-field geometry of a value with two spatial axes.

    Attributes:
      axes: which axes of the value index input rows and columns (``(1, 2)`` for NHWC).
      jump: input pixels between neighbouring positions (effective stride), (rows, cols).
      lo: int64 [G, 2]: first input (row, col) seen by position (0, 0), per channel group.
      hi: int64 [G, 2]: one past the last input (row, col) seen by position (0, 0).
      channel_axis: the axis along which windows vary (``G`` = its size), or ``None``
        when every channel sees the same window (``G = 1``).
    """

    axes: tuple[int, int]
    jump: tuple[int, int]
    lo: np.ndarray
    hi: np.ndarray
    channel_axis: int | None = None

    @property
    def size(self) -> tuple[int, int]:
        """The largest window over channels, (rows, cols) in input pixels."""
        extent = np.maximum(self.hi - self.lo, 0).max(axis=0)
        return (int(extent[0]), int(extent[1]))

    @property
    def uniform(self) -> bool:
        """Every channel sees the same window."""
        return bool(np.all(self.lo == self.lo[0]) and np.all(self.hi == self.hi[0]))

    def channel_bounds(self, channel: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(lo [2], hi [2]) for ``channel``, or the union over channels when ``None``."""
        if channel is None:
            return self.lo.min(axis=0), self.hi.max(axis=0)
        g = 0 if len(self.lo) == 1 else int(channel)
        return self.lo[g], self.hi[g]

    def window(self, y: int, x: int, channel: int | None = None) -> Window:
        """The input window of position ``(y, x)`` (of ``channel``, or all channels)."""
        lo, hi = self.channel_bounds(channel)
        dy, dx = int(y) * self.jump[0], int(x) * self.jump[1]
        return Window(int(lo[0]) + dy, int(lo[1]) + dx, int(hi[0]) + dy, int(hi[1]) + dx)

    def windows(
        self, y: np.ndarray, x: np.ndarray, channel: np.ndarray | None = None
    ) -> np.ndarray:
        """Vectorised :meth:`window`: y, x, channel [N] -> [N, 4] (top, left, bottom, right)."""
        y, x = np.asarray(y, np.int64), np.asarray(x, np.int64)
        if channel is None:
            lo, hi = (b[None] for b in self.channel_bounds())
        else:
            g = np.zeros_like(y) if len(self.lo) == 1 else np.asarray(channel, np.int64)
            lo, hi = self.lo[g], self.hi[g]
        dy, dx = y * self.jump[0], x * self.jump[1]
        return np.stack([lo[:, 0] + dy, lo[:, 1] + dx, hi[:, 0] + dy, hi[:, 1] + dx], axis=-1)

    def channel_groups(self) -> list[tuple[int, int, Window]]:
        """Runs of channels with the same window: ``[(start, stop, window of (0, 0))]``."""
        groups: list[tuple[int, int, Window]] = []
        for c in range(len(self.lo)):
            w = self.window(0, 0, c)
            if groups and groups[-1][2] == w:
                groups[-1] = (groups[-1][0], c + 1, w)
            else:
                groups.append((c, c + 1, w))
        return groups

    def describe(self) -> str:
        h, w = self.size
        size = f"{h}" if h == w else f"{h}x{w}"
        jump = f"{self.jump[0]}" if self.jump[0] == self.jump[1] else "x".join(map(str, self.jump))
        lo, _ = self.channel_bounds()
        return f"{size} px, jump {jump}, start ({int(lo[0])}, {int(lo[1])})"


Info = Field | str | None  # None: does not depend on the image


def image_field(spatial_axes: tuple[int, int] = (1, 2)) -> Field:
    """The image itself: each pixel sees itself."""
    return Field(tuple(spatial_axes), (1, 1), np.zeros((1, 2), np.int64), np.ones((1, 2), np.int64))


def receptive_fields(
    fn: Callable[..., Any],
    *args: Any,
    image_argnum: int = 0,
    spatial_axes: tuple[int, int] = (1, 2),
) -> Any:
    """Traces ``fn(*args)`` and returns the geometry of every output leaf.

    Args:
      fn: any JAX function; ``args[image_argnum]`` is the image, e.g. ``[B, H, W, C]``.
      args: arrays or ``jax.ShapeDtypeStruct`` (nothing is computed).
      spatial_axes: the image's row and column axes.

    Returns:
      The output pytree of ``fn`` with each leaf replaced by a :class:`Field`,
      :data:`GLOBAL` (no spatial receptive field) or ``None`` (independent of the image).
    """
    closed, out_shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
    leaves_before = sum(len(jax.tree.leaves(a)) for a in args[:image_argnum])
    if len(jax.tree.leaves(args[image_argnum])) != 1:
        raise ValueError("the image argument must be a single array [B, H, W, C]")
    inputs: list[Info] = [None] * len(closed.jaxpr.invars)
    inputs[leaves_before] = image_field(spatial_axes)
    outs = jaxpr_fields(closed.jaxpr, inputs)
    return jax.tree.unflatten(jax.tree.structure(out_shapes), outs)


def jaxpr_fields(jaxpr: jex_core.Jaxpr, inputs: Sequence[Info]) -> list[Info]:
    """The geometry of each of ``jaxpr``'s outputs given that of each of its inputs."""
    env: dict[Any, Info] = dict(zip(jaxpr.invars, inputs, strict=True))
    _walk(jaxpr, env)
    return [_read(env, var) for var in jaxpr.outvars]


def _read(env: dict[Any, Info], var: Any) -> Info:
    return env.get(var) if isinstance(var, jex_core.Var) else None


_CALL_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")
_CALL_PRIMS = frozenset(
    {
        "jit",
        "pjit",
        "closed_call",
        "core_call",
        "custom_jvp_call",
        "custom_vjp_call",
        "custom_vjp_call_jaxpr",
        "remat",
        "checkpoint",
        "named_call",
    }
)


def subjaxpr(eqn: jex_core.JaxprEqn) -> jex_core.Jaxpr | None:
    """The jaxpr a call-like equation runs on exactly its operands, else ``None``."""
    if eqn.primitive.name not in _CALL_PRIMS:
        return None
    for key in _CALL_PARAMS:
        value = eqn.params.get(key)
        if isinstance(value, jex_core.ClosedJaxpr):
            value = value.jaxpr
        if isinstance(value, jex_core.Jaxpr) and len(value.invars) == len(eqn.invars):
            return value
    return None


def _walk(jaxpr: jex_core.Jaxpr, env: dict[Any, Info]) -> None:
    for eqn in jaxpr.eqns:
        ins = [_read(env, v) for v in eqn.invars]
        if all(i is None for i in ins):
            continue
        sub = subjaxpr(eqn)
        if sub is not None:
            outs = jaxpr_fields(sub, ins)
        elif any(i == GLOBAL for i in ins):
            outs = [GLOBAL] * len(eqn.outvars)
        else:
            handler = _HANDLERS.get(eqn.primitive.name, _elementwise)
            outs = handler(eqn, ins)
        for var, out in zip(eqn.outvars, outs, strict=True):
            env[var] = out


# ----------------------------------------------------------------- field algebra


def _with(field: Field, **changes: Any) -> Field:
    return dataclasses.replace(field, **changes)


def _collapse(field: Field) -> Field:
    """Every channel sees the union of all channels' windows."""
    lo, hi = field.channel_bounds()
    return _with(field, lo=lo[None], hi=hi[None], channel_axis=None)


def _union(fields: Sequence[Field]) -> Info:
    """The window of a value computed position-wise from ``fields`` (same positions)."""
    first = fields[0]
    if any(f.axes != first.axes or f.jump != first.jump for f in fields):
        return GLOBAL
    axes = {f.channel_axis for f in fields} - {None}
    if len(axes) > 1:
        fields = [_collapse(f) for f in fields]
        axes = set()
    lo = np.minimum.reduce(np.broadcast_arrays(*[f.lo for f in fields]))
    hi = np.maximum.reduce(np.broadcast_arrays(*[f.hi for f in fields]))
    channel_axis = axes.pop() if axes and len(lo) > 1 else None
    return _with(first, lo=lo, hi=hi, channel_axis=channel_axis)


def _fields(ins: Sequence[Info]) -> list[Field]:
    return [i for i in ins if isinstance(i, Field)]


def _slide(field: Field, axis_params: dict[int, tuple[int, int, int, int]]) -> Field:
    """A window sliding over the value's spatial axes.

    axis_params: value axis -> (window, stride, dilation, pad_lo) for both spatial axes.
    """
    lo, hi, jump = field.lo.copy(), field.hi.copy(), list(field.jump)
    for i, axis in enumerate(field.axes):
        window, stride, dilation, pad_lo = axis_params[axis]
        lo[:, i] -= pad_lo * jump[i]
        hi[:, i] += (-pad_lo + (window - 1) * dilation) * jump[i]
        jump[i] *= stride
    return _with(field, lo=lo, hi=hi, jump=tuple(jump))


def _moved(field: Field, mapping: dict[int, int]) -> Info:
    """Re-indexes the value's axes (old -> new); a lost spatial axis is GLOBAL."""
    if any(a not in mapping for a in field.axes):
        return GLOBAL
    if field.channel_axis is not None and field.channel_axis not in mapping:
        field = _collapse(field)
    channel = None if field.channel_axis is None else mapping[field.channel_axis]
    return _with(field, axes=tuple(mapping[a] for a in field.axes), channel_axis=channel)


# ------------------------------------------------------------------ primitives


def _elementwise(eqn: jex_core.JaxprEqn, ins: list[Info]) -> list[Info]:
    out_shape = eqn.outvars[0].aval.shape
    for var, info in zip(eqn.invars, ins, strict=True):
        if not isinstance(info, Field):
            continue
        shape = var.aval.shape
        # Operands may broadcast along size-1 axes, never along the spatial ones.
        if len(shape) != len(out_shape) or any(shape[a] != out_shape[a] for a in info.axes):
            return [GLOBAL] * len(eqn.outvars)
    if len(eqn.outvars) > 1 and len(eqn.outvars) == len(ins):
        return list(ins)  # one-to-one (optimization_barrier and the like)
    return [_union(_fields(ins))] * len(eqn.outvars)


def _conv(eqn: jex_core.JaxprEqn, ins: list[Info]) -> list[Info]:
    lhs, rhs = ins
    p = eqn.params
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    spatial = list(lhs_spec[2:])
    if (
        rhs is not None
        or p["batch_group_count"] != 1
        or any(d != 1 for d in p["lhs_dilation"])
        or sorted(spatial) != sorted(lhs.axes)
    ):
        return [GLOBAL]
    kernel = eqn.invars[1].aval.shape
    params = {
        axis: (
            kernel[rhs_spec[2 + k]],
            p["window_strides"][k],
            p["rhs_dilation"][k],
            p["padding"][k][0],
        )
        for k, axis in enumerate(spatial)
    }
    grown = _slide(lhs, params)
    groups = p["feature_group_count"]
    c_out = eqn.outvars[0].aval.shape[out_spec[1]]
    if lhs.channel_axis == lhs_spec[1] and len(lhs.lo) > 1 and groups > 1:
        lo = grown.lo.reshape(groups, -1, 2).min(axis=1).repeat(c_out // groups, axis=0)
        hi = grown.hi.reshape(groups, -1, 2).max(axis=1).repeat(c_out // groups, axis=0)
        grown = _with(grown, lo=lo, hi=hi, channel_axis=out_spec[1])
    else:
        grown = _collapse(grown)
    axes = tuple(out_spec[2 + spatial.index(a)] for a in lhs.axes)
    return [_with(grown, axes=axes)]


def _reduce_window(eqn: jex_core.JaxprEqn, ins: list[Info]) -> list[Info]:
    field = _union(_fields(ins))
    if not isinstance(field, Field):
        return [GLOBAL] * len(eqn.outvars)
    p = eqn.params
    if any(p["base_dilation"][a] != 1 for a in field.axes):
        return [GLOBAL] * len(eqn.outvars)
    dilation = p.get("window_dilation") or (1,) * len(p["window_dimensions"])
    params = {
        a: (p["window_dimensions"][a], p["window_strides"][a], dilation[a], p["padding"][a][0])
        for a in field.axes
    }
    out = _slide(field, params)
    ch = field.channel_axis
    if ch is not None and (
        p["window_dimensions"][ch] != 1 or p["window_strides"][ch] != 1 or any(p["padding"][ch])
    ):
        out = _collapse(out)
    return [out] * len(eqn.outvars)


def _pad(eqn: jex_core.JaxprEqn, ins: list[Info]) -> list[Info]:
    field, value = ins
    if not isinstance(field, Field) or value is not None:
        return [GLOBAL]
    config = eqn.params["padding_config"]
    if any(config[a][2] != 0 for a in field.axes):
        return [GLOBAL]
    out = _slide(field, {a: (1, 1, 1, config[a][0]) for a in field.axes})
    ch = field.channel_axis
    if ch is not None:
        before, after, interior = config[ch]
        if interior:
            return [_collapse(out)]
        lo, hi = _pad_channels(out.lo, before, after), _pad_channels(out.hi, before, after, -1)
        out = _with(out, lo=lo, hi=hi)
    return [out]


def _pad_channels(bound: np.ndarray, before: int, after: int, sign: int = 1) -> np.ndarray:
    """Extends per-channel bounds by empty windows (negative pads crop)."""
    bound = bound[max(0, -before) : len(bound) - max(0, -after)]
    empty = lambda n: np.full((max(0, n), 2), sign * _EMPTY, np.int64)  # noqa: E731
    return np.concatenate([empty(before), bound, empty(after)])


def _slice(eqn: jex_core.JaxprEqn, ins: list[Info]) -> list[Info]:
    field = ins[0]
    start = eqn.params["start_indices"]
    limit = eqn.params["limit_indices"]
    strides = eqn.params["strides"] or (1,) * len(start)
    out = _slide(field, {a: (1, strides[a], 1, -start[a]) for a in field.axes})
    ch = field.channel_axis
    if ch is not None:
        cut = slice(start[ch], limit[ch], strides[ch])
        out = _with(out, lo=out.lo[cut], hi=out.hi[cut])
    return [out]


def _split(eqn: jex_core.JaxprEqn, ins: list[Info]) -> list[Info]:
    field = ins[0]
    axis, sizes = eqn.params["axis"], eqn.params["sizes"]
    outs: list[Info] = []
    start = 0
    for size in sizes:
        if axis in field.axes:
            outs.append(
                _slide(field, {a: (1, 1, 1, -start if a == axis else 0) for a in field.axes})
            )
        elif axis == field.channel_axis:
            cut = slice(start, start + size)
            outs.append(_with(field, lo=field.lo[cut], hi=field.hi[cut]))
        else:
            outs.append(field)
        start += size
    return outs


def _transpose(eqn: jex_core.JaxprEqn, ins: list[Info]) -> list[Info]:
    perm = list(eqn.params["permutation"])
    return [_moved(ins[0], {old: perm.index(old) for old in perm})]


def _broadcast_in_dim(eqn: jex_core.JaxprEqn, ins: list[Info]) -> list[Info]:
    field = ins[0]
    src, out = eqn.invars[0].aval.shape, eqn.outvars[0].aval.shape
    dims = eqn.params["broadcast_dimensions"]
    if any(src[a] != out[dims[a]] for a in field.axes):
        return [GLOBAL]
    ch = field.channel_axis
    if ch is not None and src[ch] != out[dims[ch]]:
        field = _collapse(field)
    return [_moved(field, {a: dims[a] for a in range(len(src))})]


def _reshape_map(src: Sequence[int], out: Sequence[int]) -> dict[int, int]:
    """Axes that a reshape keeps intact: {source axis: output axis}."""
    mapping = {}
    src_before = np.cumprod([1, *src])
    out_before = np.cumprod([1, *out])
    for i, size in enumerate(src):
        for j, other in enumerate(out):
            same_place = src_before[i] == out_before[j] and src_before[i + 1] == out_before[j + 1]
            if size == other and same_place and j not in mapping.values():
                mapping[i] = j
                break
    return mapping


def _reshape(eqn: jex_core.JaxprEqn, ins: list[Info]) -> list[Info]:
    src, out = eqn.invars[0].aval.shape, eqn.outvars[0].aval.shape
    return [_moved(ins[0], _reshape_map(src, out))]


def _squeeze(eqn: jex_core.JaxprEqn, ins: list[Info]) -> list[Info]:
    dims = set(eqn.params["dimensions"])
    rank = len(eqn.invars[0].aval.shape)
    kept = [a for a in range(rank) if a not in dims]
    return [_moved(ins[0], {a: kept.index(a) for a in kept})]


def _reduce(eqn: jex_core.JaxprEqn, ins: list[Info]) -> list[Info]:
    field = _union(_fields(ins))
    if not isinstance(field, Field):
        return [GLOBAL] * len(eqn.outvars)
    reduced = set(eqn.params["axes"])
    rank = len(eqn.invars[0].aval.shape)
    kept = [a for a in range(rank) if a not in reduced]
    return [_moved(field, {a: kept.index(a) for a in kept})] * len(eqn.outvars)


def _concatenate(eqn: jex_core.JaxprEqn, ins: list[Info]) -> list[Info]:
    dim = eqn.params["dimension"]
    fields = _fields(ins)
    if any(dim in f.axes for f in fields):
        return [GLOBAL]
    first = fields[0]
    if any(f.axes != first.axes or f.jump != first.jump for f in fields):
        return [GLOBAL]
    if any(f.channel_axis not in (None, dim) for f in fields):
        return [_union([_collapse(f) for f in fields])]
    los, his = [], []
    for var, info in zip(eqn.invars, ins, strict=True):
        n = var.aval.shape[dim]
        if info is None:
            los.append(np.full((n, 2), _EMPTY, np.int64))
            his.append(np.full((n, 2), -_EMPTY, np.int64))
        else:
            los.append(np.broadcast_to(info.lo, (n, 2)))
            his.append(np.broadcast_to(info.hi, (n, 2)))
    out = _with(first, lo=np.concatenate(los), hi=np.concatenate(his), channel_axis=dim)
    return [out if not out.uniform else _collapse(out)]


def _dot_general(eqn: jex_core.JaxprEqn, ins: list[Info]) -> list[Info]:
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
    ranks = [len(v.aval.shape) for v in eqn.invars]
    free = [
        [
            d
            for d in range(ranks[s])
            if d not in (lhs_contract, rhs_contract)[s] and d not in (lhs_batch, rhs_batch)[s]
        ]
        for s in (0, 1)
    ]
    outs = []
    for side, info in enumerate(ins):
        if info is None:
            continue
        contract, batch = (lhs_contract, rhs_contract)[side], (lhs_batch, rhs_batch)[side]
        offset = len(lhs_batch) + (0 if side == 0 else len(free[0]))
        mapping = {b: i for i, b in enumerate(batch)}
        mapping.update({d: offset + i for i, d in enumerate(free[side])})
        if any(a in contract for a in info.axes):
            return [GLOBAL]
        moved = _moved(info, mapping)
        if not isinstance(moved, Field):
            return [GLOBAL]
        outs.append(moved)
    return [_union(outs)]


def _rev(eqn: jex_core.JaxprEqn, ins: list[Info]) -> list[Info]:
    field = ins[0]
    dims = set(eqn.params["dimensions"])
    if dims & set(field.axes):
        return [GLOBAL]
    if field.channel_axis in dims:
        field = _with(field, lo=field.lo[::-1], hi=field.hi[::-1])
    return [field]


def _global(eqn: jex_core.JaxprEqn, ins: list[Info]) -> list[Info]:
    return [GLOBAL] * len(eqn.outvars)


_HANDLERS: dict[str, Callable[[jex_core.JaxprEqn, list[Info]], list[Info]]] = {
    "conv_general_dilated": _conv,
    "reduce_window_max": _reduce_window,
    "reduce_window_min": _reduce_window,
    "reduce_window_sum": _reduce_window,
    "reduce_window": _reduce_window,
    "pad": _pad,
    "slice": _slice,
    "split": _split,
    "transpose": _transpose,
    "broadcast_in_dim": _broadcast_in_dim,
    "reshape": _reshape,
    "squeeze": _squeeze,
    "concatenate": _concatenate,
    "dot_general": _dot_general,
    "rev": _rev,
    **{
        name: _reduce
        for name in (
            "reduce_sum",
            "reduce_max",
            "reduce_min",
            "reduce_prod",
            "reduce_and",
            "reduce_or",
            "reduce_xor",
            "argmax",
            "argmin",
        )
    },
    **{
        name: _global
        for name in (
            "gather",
            "scatter",
            "scatter-add",
            "scatter_add",
            "scatter_mul",
            "scatter_min",
            "scatter_max",
            "dynamic_slice",
            "dynamic_update_slice",
            "cumsum",
            "cumprod",
            "cummax",
            "cummin",
            "cumlogsumexp",
            "sort",
            "fft",
            "while",
            "cond",
            "scan",
            "top_k",
            "conv_transpose",
            "custom_linear_solve",
            "psum",
            "all_gather",
        )
    },
}


# ------------------------------------------------------------------ cropping


def crop(
    image: np.ndarray, window: Window | Sequence[int], fill: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Cuts ``window`` out of ``image`` [H, W, C] (numpy).

    Returns ``(patch [h, w, C], mask [h, w] bool)`` at the window's full size: rows
    and columns beyond the image border are ``fill`` and ``False`` in the mask.
    """
    top, left, bottom, right = (int(v) for v in window)
    height, width = image.shape[:2]
    patch = np.full((bottom - top, right - left, *image.shape[2:]), fill, image.dtype)
    mask = np.zeros((bottom - top, right - left), bool)
    y0, y1 = max(top, 0), min(bottom, height)
    x0, x1 = max(left, 0), min(right, width)
    if y1 > y0 and x1 > x0:
        patch[y0 - top : y1 - top, x0 - left : x1 - left] = image[y0:y1, x0:x1]
        mask[y0 - top : y1 - top, x0 - left : x1 - left] = True
    return patch, mask


def crop_batch(
    images: jax.Array, tops: jax.Array, lefts: jax.Array, size: tuple[int, int], fill: float = 0.0
) -> tuple[jax.Array, jax.Array]:
    """Jittable :func:`crop` of one window per image, all of the same ``size``.

    images: [N, H, W, C]; tops, lefts: [N] int (may be negative or past the border).
    Returns ``(patches [N, h, w, C], masks [N, h, w] bool)``.
    """
    h, w = size
    n, height, width, _ = images.shape
    pad = ((0, 0), (h, h), (w, w), (0, 0))
    padded = jnp.pad(images, pad, constant_values=fill)
    inside = jnp.pad(jnp.ones((n, height, width), bool), pad[:3])
    tops = jnp.clip(jnp.asarray(tops) + h, 0, height + h)
    lefts = jnp.clip(jnp.asarray(lefts) + w, 0, width + w)

    def one(image, valid, top, left):
        patch = jax.lax.dynamic_slice(image, (top, left, 0), (h, w, image.shape[-1]))
        return patch, jax.lax.dynamic_slice(valid, (top, left), (h, w))

    return jax.vmap(one)(padded, inside, tops, lefts)
