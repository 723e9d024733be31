"""A device mesh and partition rules from the config: what is sharded how, as data.

``config.mesh`` names the mesh axes and their sizes, in order, e.g.
``(("data", -1), ("fsdp", 1))`` (``-1``: every device the other axes leave). The
devices fill the mesh in order (each process's devices contiguous), so the first
axis spans the hosts: ``(("data", -1), ("fsdp", 8))`` shards the state within each
8-device host and replicates it across hosts; ``(("fsdp", -1), ("data", 1))`` shards
it over every device of every host. The global batch is split over the batch axes
present (:data:`BATCH_AXES`: ``data`` and ``fsdp``, in mesh order); other axes (e.g.
``model``) hold the batch whole.

``config.partitioning`` says how each array of the train state is laid out: a preset
name from :data:`PRESETS`, or an ordered tuple of ``(regex, spec)`` rules. The first
rule whose regex matches the whole of an array's path (``params/conv1/kernel``,
``opt_state/0/trace/conv1/kernel``, ``model_state/batch_stats/bn1/mean``) decides;
an array no rule matches is replicated. A spec is

- a tuple with one entry per dimension: a mesh axis name, a tuple of names, or
  ``None`` (e.g. ``(None, None, None, "fsdp")``: a convolution kernel's output
  channels split over ``fsdp``); ``()`` replicates;
- ``"fsdp"``: split an array of at least :data:`FSDP_MIN_SIZE` elements over the
  ``fsdp`` axis along its largest dimension that the axis size divides; smaller
  arrays (biases, BatchNorm scales, counters) and arrays with no such dimension
  stay replicated.

Presets: ``replicate`` (data parallel) is ``((".*", ()),)``; ``fsdp`` is
``((".*", "fsdp"),)``.

Everything here is checked before anything compiles and fails with one line naming
the config field and the valid choices.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PyTree = Any
BATCH_AXES = ("data", "fsdp")  # the axes that split the batch
DEFAULT_MESH = (("data", -1), ("fsdp", 1))
FSDP = "fsdp"
FSDP_MIN_SIZE = 2**12  # elements: smaller arrays stay replicated under the "fsdp" rule
PRESETS = {"replicate": ((".*", ()),), "fsdp": ((".*", FSDP),)}


def mesh_shape(spec: Sequence[tuple[str, int]] | None, num_devices: int) -> dict[str, int]:
    """``config.mesh`` -> ``{axis: size}`` over ``num_devices`` devices (one ``-1``
    takes the rest). Raises ``ValueError`` when the sizes do not multiply to the count."""
    spec = DEFAULT_MESH if spec is None else spec
    example = f"e.g. (('data', {num_devices}), ('fsdp', 1)) or (('data', -1), ('fsdp', 2))"
    try:
        pairs = [(str(name), int(size)) for name, size in spec]
    except (TypeError, ValueError):
        raise ValueError(f"mesh must be (axis name, size) pairs; got {spec!r}; {example}") from None
    names = [name for name, _ in pairs]
    free = [name for name, size in pairs if size == -1]
    bad = [size for _, size in pairs if size < 1 and size != -1]
    if not pairs or len(set(names)) != len(names) or len(free) > 1 or bad:
        raise ValueError(
            f"mesh {spec!r} needs distinct axis names and sizes >= 1 (one may be -1: the "
            f"rest); {example}"
        )
    known = math.prod(size for _, size in pairs if size != -1)
    if free and num_devices % known == 0:
        pairs = [(name, num_devices // known if size == -1 else size) for name, size in pairs]
    total = math.prod(size for _, size in pairs)
    if total != num_devices or (free and num_devices % known):
        raise ValueError(
            f"mesh {spec!r} does not fit the {num_devices} device(s): its sizes must multiply "
            f"to {num_devices}; {example}"
        )
    return dict(pairs)


def make_mesh(spec: Sequence[tuple[str, int]] | None, devices: Sequence[jax.Device] | None = None):
    """The :class:`~jax.sharding.Mesh` of ``config.mesh`` over ``devices`` (default:
    every device of every process, each process's devices contiguous)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(spec, len(devices))
    grid = np.array(devices, dtype=object).reshape(tuple(shape.values()))
    return Mesh(grid, tuple(shape))


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    """The mesh axes that split the batch: :data:`BATCH_AXES` present in ``mesh``, in mesh
    order (so each process's share of the batch is one contiguous block)."""
    return tuple(name for name in mesh.axis_names if name in BATCH_AXES)


def batch_spec(mesh: Mesh) -> P:
    """The batch's partition: its leading dimension over every batch axis."""
    return P(batch_axes(mesh) or None)


def rules_from_config(partitioning: Any) -> tuple[tuple[str, Any], ...]:
    """``config.partitioning`` (a preset name or ``(regex, spec)`` rules) as rules."""
    if partitioning is None:
        partitioning = "replicate"
    if isinstance(partitioning, str):
        if partitioning not in PRESETS:
            raise ValueError(
                f"Unknown partitioning {partitioning!r}; valid: {', '.join(PRESETS)}, or "
                "(regex, spec) rules"
            )
        return PRESETS[partitioning]
    try:
        rules = tuple((str(regex), spec) for regex, spec in partitioning)
        for regex, _ in rules:
            re.compile(regex)
    except (TypeError, ValueError, re.error) as error:
        raise ValueError(
            f"partitioning must be one of {', '.join(PRESETS)} or (regex, spec) rules; got "
            f"{partitioning!r} ({error})"
        ) from None
    return rules


def _axes_of(spec: Any) -> list[str]:
    if spec == FSDP:
        return [FSDP]
    names = []
    for entry in spec:
        names += [entry] if isinstance(entry, str) else list(entry or ())
    return names


def check_rules(rules: Sequence[tuple[str, Any]], mesh: Mesh) -> None:
    """Raises ``ValueError`` for a rule naming an axis not in ``mesh``."""
    for regex, spec in rules:
        if not (spec == FSDP or isinstance(spec, tuple | list)):
            raise ValueError(
                f"partitioning rule ({regex!r}, {spec!r}): the spec must be 'fsdp' or a tuple "
                "with a mesh axis name (or None) per dimension"
            )
        for name in _axes_of(spec):
            if name not in mesh.axis_names:
                raise ValueError(
                    f"partitioning rule ({regex!r}, {spec!r}) names axis {name!r}, which is "
                    f"not in the mesh; mesh axes: {', '.join(mesh.axis_names)}"
                )


def path_name(key_path: Sequence[Any]) -> str:
    """A pytree key path as ``params/conv1/kernel``."""
    return jax.tree_util.keystr(tuple(key_path), simple=True, separator="/")


def fsdp_spec(shape: Sequence[int], fsdp_size: int) -> P:
    """``fsdp`` along the largest dimension it divides, for an array of at least
    :data:`FSDP_MIN_SIZE` elements; else replicated."""
    if fsdp_size == 1 or math.prod(shape) < FSDP_MIN_SIZE:
        return P()
    dims = [d for d in np.argsort(shape, kind="stable")[::-1] if shape[d] % fsdp_size == 0]
    if not dims:
        return P()
    entries: list[str | None] = [None] * len(shape)
    entries[int(dims[0])] = FSDP
    return P(*entries)


def _leaf_spec(name: str, shape: tuple[int, ...], rules, mesh: Mesh) -> P:
    for regex, spec in rules:
        if not re.fullmatch(regex, name):
            continue
        if spec == FSDP:
            return fsdp_spec(shape, mesh.shape[FSDP])
        spec = tuple(spec)
        if len(spec) > len(shape):
            raise ValueError(
                f"partitioning rule ({regex!r}, {spec!r}) has {len(spec)} entries but {name} "
                f"has shape {list(shape)} ({len(shape)} dimensions)"
            )
        for dim, entry in enumerate(spec):
            size = math.prod(mesh.shape[a] for a in _axes_of((entry,)))
            if shape[dim] % size:
                raise ValueError(
                    f"partitioning rule ({regex!r}, {spec!r}) splits dimension {dim} of {name} "
                    f"(shape {list(shape)}) over {entry!r} of size {size}, which does not "
                    f"divide {shape[dim]}; change the rule or config.mesh"
                )
        return P(*spec)
    return P()


def state_specs(abstract: PyTree, rules: Sequence[tuple[str, Any]], mesh: Mesh) -> PyTree:
    """A :class:`~jax.sharding.PartitionSpec` for every array of ``abstract`` (arrays or
    ``jax.ShapeDtypeStruct``), from the first rule matching its path."""
    check_rules(rules, mesh)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: _leaf_spec(path_name(path), tuple(np.shape(x)), rules, mesh), abstract
    )


def state_shardings(abstract: PyTree, rules: Sequence[tuple[str, Any]], mesh: Mesh) -> PyTree:
    """:func:`state_specs` as :class:`~jax.sharding.NamedSharding` on ``mesh``."""
    return jax.tree.map(
        lambda spec: NamedSharding(mesh, spec),
        state_specs(abstract, rules, mesh),
        is_leaf=lambda x: isinstance(x, P),
    )
