"""Streaming top-k mining: the images that excite each unit most, over a whole dataset.

For every unit (channel) of a layer, an image's *response* is the unit's largest
activation over the image's positions (the first position in row-major order
when several tie). Over a stream of batches a running top-k per unit keeps the
``k`` largest responses with the image index and the position ``(y, x)``
(Zeiler & Fergus's "top 9 activations"), so the state is ``[units, k]`` whatever
the dataset size and no activation tensor ever leaves the device.

Order is defined exactly: larger responses first, ties broken by the smaller
image index (images arrive in increasing index order). Each batch is reduced to its
own top-k (per device under ``pmap`` or ``shard_map``: the candidates of all devices
are gathered over the data axis) and merged with the running one by a stable
``lax.top_k``, so the result is the same under ``jit``, ``pmap`` and ``shard_map``
and equals sorting all responses at once. Beyond the forward pass a batch costs
about one max over every activation (see :func:`image_maxima`).

    >>> step = make_mining_step(features, k=9)          # features(params, x) -> {layer: act}
    >>> mine = compile_mining_step(step, "jit")
    >>> state = empty_state(shapes, k=9)                 # {layer: TopK}
    >>> for batch in batches:                            # {'image', 'index', 'mask'}
    ...     state = mine(state, params, batch)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

PyTree = Any
DATA_AXIS = "data"
HOWS = ("jit", "pmap", "shard_map")


class TopK(NamedTuple):
    """Per-unit top-k, best first. All fields are [units, k]; empty slots have
    ``value = -inf`` and ``index = -1``."""

    value: jax.Array  # float32
    index: jax.Array  # int32: the image's position in the stream
    y: jax.Array  # int32: row of the best position in the layer
    x: jax.Array  # int32: column of the best position in the layer


def empty_topk(num_units: int, k: int = 9) -> TopK:
    """A top-k with nothing in it yet: [num_units, k]."""
    if k < 1 or num_units < 1:
        raise ValueError(f"need k >= 1 and at least one unit; got k={k}, units={num_units}")
    shape = (num_units, k)
    minus_one = np.full(shape, -1, np.int32)
    return TopK(np.full(shape, -np.inf, np.float32), minus_one, minus_one.copy(), minus_one.copy())


def empty_state(layer_shapes: Mapping[str, Any], k: int = 9) -> dict[str, TopK]:
    """{layer: empty TopK} for activations of shapes ``{layer: [B, H, W, C]}``."""
    return {name: empty_topk(int(shape.shape[-1]), k) for name, shape in layer_shapes.items()}


def first_argmax(values: jax.Array, axis: int) -> jax.Array:
    """The first index of the maximum along ``axis`` (int32; the axis removed)."""
    position = lax.broadcasted_iota(jnp.int32, values.shape, axis)

    def better(a, c):
        (va, ia), (vc, ic) = a, c
        take_a = (va > vc) | ((va == vc) & (ia < ic))
        return jnp.where(take_a, va, vc), jnp.where(take_a, ia, ic)

    init = (np.array(-np.inf, values.dtype), np.int32(values.shape[axis]))
    return lax.reduce((values, position), init, better, (axis,))[1]


def image_maxima(act: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """act: [B, H, W, U] -> (value, y, x), each [B, U]: every unit's largest activation
    per image and its first position in row-major order.

    One pass over ``act`` (the maximum of every row); the row of the maximum is found
    among the row maxima, then its column in that one row (a gather of 1/H of ``act``).
    """
    act = act.astype(jnp.float32)
    row_max = act.max(axis=2)  # [B, H, U]
    value = row_max.max(axis=1)  # [B, U]
    y = first_argmax(row_max, axis=1)
    row = jnp.take_along_axis(act, y[:, None, None, :], axis=1)[:, 0]  # [B, W, U]
    return value, y, first_argmax(row, axis=1)


def _take(a: jax.Array, order: jax.Array) -> jax.Array:
    return jnp.take_along_axis(a, order, axis=1)


def batch_topk(act: jax.Array, index: jax.Array, valid: jax.Array, k: int) -> TopK:
    """This batch's top-k per unit (``min(k, B)`` slots). act: [B, H, W, U]; index: [B]
    int32, the images' positions in the stream (increasing); valid: [B] (False for
    padding examples)."""
    value, y, x = image_maxima(act)
    valid = jnp.asarray(valid).astype(bool)
    value = jnp.where(valid[:, None], value, -jnp.inf)
    top, rows = lax.top_k(value.T, min(k, act.shape[0]))  # [U, k']: ties -> earlier image
    chosen = valid[rows]
    index = jnp.where(chosen, jnp.asarray(index, jnp.int32)[rows], -1)
    y = jnp.where(chosen, _take(y.T, rows), -1).astype(jnp.int32)
    x = jnp.where(chosen, _take(x.T, rows), -1).astype(jnp.int32)
    return TopK(top, index, y, x)


def merge_topk(running: TopK, new: TopK) -> TopK:
    """The top-k of ``running`` [U, k] and ``new`` [U, n] (``new`` holds later images:
    on equal values ``running``'s entries come first, then ``new``'s in order)."""
    k = running.value.shape[1]
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=1), running, new)
    _, order = lax.top_k(both.value, k)  # stable: the lower position wins a tie
    return TopK(*(_take(a, order) for a in both))


def update_topk(
    running: TopK, act: jax.Array, index: jax.Array, valid: jax.Array, axis_name: str | None = None
) -> TopK:
    """Merges a batch (this device's share of it under ``axis_name``) into ``running``.

    Devices hold consecutive slices of the batch (as ``pmap``/``shard_map`` split it):
    their candidates are gathered in device order, so ties still go to the earlier image.
    """
    k = running.value.shape[1]
    new = batch_topk(act, index, valid, k)
    if axis_name is not None:
        # [U, devices * k']: every device's candidates, so every device merges the same.
        new = jax.tree.map(lambda a: lax.all_gather(a, axis_name, axis=1, tiled=True), new)
    return merge_topk(running, new)


MiningStep = Callable[[dict[str, TopK], PyTree, Mapping[str, jax.Array]], dict[str, TopK]]


def make_mining_step(
    features: Callable[[PyTree, jax.Array], Mapping[str, jax.Array]],
    axis_name: str | None = None,
) -> MiningStep:
    """``step(state, params, batch) -> state`` for ``features(params, images) -> {layer: act}``.

    batch: ``{'image': [b, ...], 'index': [b] int32, 'mask': [b]}`` (mask 0: padding).
    """

    def step(state, params, batch):
        acts = features(params, batch["image"])
        return {
            name: update_topk(state[name], acts[name], batch["index"], batch["mask"], axis_name)
            for name in state
        }

    return step


def compile_mining_step(
    step_for_axis: Callable[[str | None], MiningStep],
    how: str,
    devices: Sequence[jax.Device] | None = None,
    axis_name: str = DATA_AXIS,
) -> MiningStep:
    """Compiles a mining step under ``how``: ``'jit'`` (one device), ``'pmap'`` (state and
    params replicated with a leading device axis, batch ``[devices, b, ...]``) or
    ``'shard_map'`` (state and params replicated, batch sharded over a 1-D mesh).

    ``step_for_axis(axis_name)`` builds the step (e.g. ``partial(make_mining_step, f)``).
    """
    if how not in HOWS:
        raise ValueError(f"Unknown strategy {how!r}; valid: {', '.join(HOWS)}")
    if how == "jit":
        return jax.jit(step_for_axis(None), donate_argnums=0)
    step = step_for_axis(axis_name)
    if how == "pmap":
        return jax.pmap(step, axis_name=axis_name, devices=devices, donate_argnums=0)
    mesh = Mesh(np.array(list(devices or jax.devices())), (axis_name,))
    sharded = jax.shard_map(
        step, mesh=mesh, in_specs=(P(), P(), P(axis_name)), out_specs=P(), check_vma=False
    )
    return jax.jit(sharded, donate_argnums=0)


def to_numpy(state: Mapping[str, TopK]) -> dict[str, TopK]:
    """Host copies of a (possibly replicated) state: ``{layer: TopK of numpy arrays}``."""

    def one(a: jax.Array) -> np.ndarray:
        if isinstance(a, jax.Array) and not a.is_fully_replicated:
            return np.asarray(a.addressable_data(0))[0]  # pmap: [devices, ...] copies
        return np.asarray(a)

    return {name: TopK(*(one(a) for a in topk)) for name, topk in state.items()}
