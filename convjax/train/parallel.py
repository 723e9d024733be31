"""Four ways to run the same step: ``jit`` (one device), ``pmap``, ``shard_map`` and
``gspmd`` (a sharded state on a device mesh).

A :class:`Strategy` owns everything that depends on how the step is spread over
devices: where the state lives, how a host batch is split, how the step is
compiled, and how state comes back to the host. The step itself is the one pure
function from :mod:`convjax.train.step`; under ``pmap`` and ``shard_map`` its
collectives use the named axis :data:`DATA_AXIS`.

- ``jit``: one device, no collectives.
- ``pmap``: state replicated with a leading local-device axis; each host's batch is
  reshaped to ``[local_devices, per_device, ...]``.
- ``shard_map``: ``jax.jit`` over ``jax.shard_map`` on a 1-D ``Mesh`` of every
  device of every host; state replicated (``P()``), batch sharded
  (``P(DATA_AXIS)``) and assembled from each host's share.
- ``gspmd``: ``jax.jit`` with explicit shardings on the mesh of ``config.mesh``
  (:mod:`convjax.train.partitioning`); each array of the state is laid out by
  ``config.partitioning`` (replicated, or split over ``fsdp``), the batch is split
  over the batch axes (``data`` x ``fsdp``). The step is the single-device one: XLA
  inserts the reductions (gradients, metrics, BatchNorm statistics) over exactly the
  axes that split the batch, so it computes what ``jit`` computes on the global batch.
  The state is born sharded (:meth:`Strategy.init_state`), restored sharded
  (:meth:`Strategy.restore_target`) and checkpointed as the sharded arrays it is.
"""

from __future__ import annotations

import abc
import collections
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from convjax.tasks.base import EvalFn, LossFn
from convjax.train import partitioning
from convjax.train.state import TrainState
from convjax.train.step import (
    BatchTransform,
    EvalStep,
    TrainStep,
    make_eval_step,
    make_train_step,
)

DATA_AXIS = "data"
STRATEGIES = ("auto", "jit", "pmap", "shard_map", "gspmd")

PyTree = Any


class Strategy(abc.ABC):
    """How the generic step is placed on devices."""

    name: str
    axis_name: str | None = DATA_AXIS

    @property
    @abc.abstractmethod
    def num_devices(self) -> int:
        """Devices over which the global batch is split (all hosts together)."""

    def check_batch_size(self, global_batch_size: int, field: str = "batch_size") -> None:
        """Raises ``ValueError`` unless the global batch divides over devices and hosts.

        ``field`` names the config field the size came from (``batch_size``,
        ``eval_batch_size``), so the message tells the user which one to change.
        """
        n, hosts = self.num_devices, jax.process_count()
        size = global_batch_size
        if size <= 0 or size % n or size % hosts:
            lower = max(n, size // n * n)
            hint = ""
            if hosts == 1 and jax.default_backend() == "cpu":
                hint = (
                    ", or unset XLA_FLAGS so that experiments/train.py picks a CPU device "
                    "count that divides the batch sizes"
                )
            raise ValueError(
                f"{field} {size} does not divide over {n} device(s) "
                f"({jax.local_device_count()} per host x {hosts} host(s)) with the "
                f"{self.name!r} strategy; set {field} to a multiple of {n}, e.g. {lower} or "
                f"{lower + n}{hint}."
            )

    @abc.abstractmethod
    def put_state(self, state: PyTree) -> PyTree:
        """Places a host state (the same on every host) for the step."""

    @abc.abstractmethod
    def get_state(self, state: PyTree) -> PyTree:
        """One host copy (numpy) of a placed state, e.g. to checkpoint it."""

    @abc.abstractmethod
    def put_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Places this host's share of a global batch: ``[b_host, ...]`` arrays."""

    @abc.abstractmethod
    def get_metrics(self, metrics: PyTree) -> PyTree:
        """Host numpy values of metrics returned by a compiled step."""

    @abc.abstractmethod
    def compile_train_step(
        self, loss_fn: LossFn, batch_transform: BatchTransform | None = None
    ) -> TrainStep:
        """The compiled train step (:func:`~convjax.train.step.make_train_step`); its
        state argument is donated."""

    @abc.abstractmethod
    def compile_eval_step(self, eval_fn: EvalFn) -> EvalStep:
        """The compiled eval step returning batch sums over all devices."""

    def check_state(self, abstract: TrainState) -> None:
        """Raises ``ValueError`` when the state (``jax.eval_shape`` leaves) cannot be laid
        out as configured; nothing to check for a replicated state."""
        del abstract

    def init_state(self, create: Callable[[], TrainState]) -> TrainState:
        """A fresh state from ``create()`` (traceable), placed for the step. Here it is
        initialised on the host CPU, then placed."""
        with jax.default_device(jax.local_devices(backend="cpu")[0]):
            host = jax.tree.map(np.asarray, create())
        return self.put_state(host)

    def restore_target(self, abstract: TrainState) -> TrainState:
        """What a checkpoint is restored into (then placed with :meth:`put_state`)."""
        return abstract

    def checkpoint_items(self, state: TrainState) -> PyTree:
        """The arrays to save of a placed state (:meth:`TrainState.checkpoint_items`)."""
        return self.get_state(state).checkpoint_items()


def _to_numpy(tree: PyTree) -> PyTree:
    return jax.tree.map(np.asarray, jax.device_get(tree))


class JitStrategy(Strategy):
    name = "jit"
    axis_name = None

    def __init__(self, device: jax.Device | None = None):
        if jax.process_count() > 1:
            raise ValueError(
                "the 'jit' strategy runs on a single device; with several hosts use "
                "'pmap' or 'shard_map'."
            )
        self.device = device or jax.local_devices()[0]

    @property
    def num_devices(self) -> int:
        return 1

    def put_state(self, state):
        return jax.device_put(state, self.device)

    def get_state(self, state):
        return _to_numpy(state)

    def put_batch(self, batch):
        return jax.device_put(batch, self.device)

    def get_metrics(self, metrics):
        return _to_numpy(metrics)

    def compile_train_step(self, loss_fn, batch_transform=None):
        return jax.jit(make_train_step(loss_fn, None, batch_transform), donate_argnums=0)

    def compile_eval_step(self, eval_fn):
        return jax.jit(make_eval_step(eval_fn, None))


class PmapStrategy(Strategy):
    name = "pmap"

    def __init__(self):
        self.devices = jax.local_devices()
        self._sharding = NamedSharding(Mesh(np.array(self.devices), (DATA_AXIS,)), P(DATA_AXIS))

    @property
    def num_devices(self) -> int:
        return jax.device_count()

    def put_state(self, state):
        n = len(self.devices)
        stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), state)
        return jax.device_put(stacked, self._sharding)

    def get_state(self, state):
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], state)

    def put_batch(self, batch):
        n = len(self.devices)

        def split(x):
            x = np.asarray(x)
            return x.reshape(n, x.shape[0] // n, *x.shape[1:])

        return jax.device_put(jax.tree.map(split, batch), self._sharding)

    def get_metrics(self, metrics):
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], metrics)

    def compile_train_step(self, loss_fn, batch_transform=None):
        step = make_train_step(loss_fn, DATA_AXIS, batch_transform)
        return jax.pmap(step, axis_name=DATA_AXIS, donate_argnums=0)

    def compile_eval_step(self, eval_fn):
        return jax.pmap(make_eval_step(eval_fn, DATA_AXIS), axis_name=DATA_AXIS)


class ShardMapStrategy(Strategy):
    name = "shard_map"

    def __init__(self, devices: Iterable[jax.Device] | None = None):
        self.mesh = Mesh(np.array(list(devices or jax.devices())), (DATA_AXIS,))
        self._replicated = NamedSharding(self.mesh, P())
        self._sharded = NamedSharding(self.mesh, P(DATA_AXIS))

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    def put_state(self, state):
        def put(x):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, self._replicated, lambda idx: x[idx])

        return jax.tree.map(put, state)

    def get_state(self, state):
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state)

    def put_batch(self, batch):
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(self._sharded, np.asarray(x)), batch
        )

    def get_metrics(self, metrics):
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), metrics)

    def _shard(self, fn: Callable) -> Callable:
        # check_vma=False: with varying-axis checks on, autodiff already psums the
        # gradient of a replicated input, and the step's explicit pmean (which pmap
        # needs) would then see a sum instead of per-device gradients.
        return jax.shard_map(
            fn,
            mesh=self.mesh,
            in_specs=(P(), P(DATA_AXIS)),
            out_specs=(P(), P()),
            check_vma=False,
        )

    def compile_train_step(self, loss_fn, batch_transform=None):
        step = make_train_step(loss_fn, DATA_AXIS, batch_transform)
        return jax.jit(self._shard(step), donate_argnums=0)

    def compile_eval_step(self, eval_fn):
        step = make_eval_step(eval_fn, DATA_AXIS)
        sharded = jax.shard_map(
            step, mesh=self.mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=P(), check_vma=False
        )
        return jax.jit(sharded)


class GspmdStrategy(Strategy):
    name = "gspmd"
    axis_name = None  # the step is the single-device one; XLA adds the reductions

    def __init__(
        self,
        mesh: Sequence[tuple[str, int]] | None = None,
        rules: Any = "replicate",
        devices: Sequence[jax.Device] | None = None,
    ):
        self.mesh = partitioning.make_mesh(mesh, devices)
        self.rules = partitioning.rules_from_config(rules)
        partitioning.check_rules(self.rules, self.mesh)
        self._replicated = NamedSharding(self.mesh, P())
        self._batch = NamedSharding(self.mesh, partitioning.batch_spec(self.mesh))

    @property
    def num_devices(self) -> int:
        return math.prod(self.mesh.shape[a] for a in partitioning.batch_axes(self.mesh))

    def check_batch_size(self, global_batch_size: int, field: str = "batch_size") -> None:
        n, size = self.num_devices, global_batch_size
        axes = " x ".join(f"{a} {self.mesh.shape[a]}" for a in partitioning.batch_axes(self.mesh))
        if size <= 0 or size % n or size % jax.process_count():
            lower = max(n, size // n * n)
            raise ValueError(
                f"{field} {size} does not divide over the mesh's batch axes ({axes or 'none'}: "
                f"{n} shards, {jax.process_count()} host(s)); set {field} to a multiple of {n}, "
                f"e.g. {lower} or {lower + n}, or change config.mesh."
            )

    def shardings(self, abstract: PyTree) -> PyTree:
        """The :class:`NamedSharding` of every array of ``abstract`` (its rule's layout)."""
        return partitioning.state_shardings(abstract, self.rules, self.mesh)

    def check_state(self, abstract):
        self.shardings(abstract)

    def init_state(self, create):
        shardings = self.shardings(jax.eval_shape(create))
        return jax.jit(create, out_shardings=shardings)()

    def restore_target(self, abstract):
        return jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            abstract,
            self.shardings(abstract),
        )

    def put_state(self, state):
        def put(x, sharding):
            if isinstance(x, jax.Array):
                return jax.device_put(x, sharding)
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

        return jax.tree.map(put, state, self.shardings(state))

    def get_state(self, state):
        from jax.experimental import multihost_utils

        return jax.tree.map(
            lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), state
        )

    def checkpoint_items(self, state):
        return state.checkpoint_items()  # the sharded arrays: each process saves its shards

    def put_batch(self, batch):
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(self._batch, np.asarray(x)), batch
        )

    def get_metrics(self, metrics):
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), metrics)

    def compile_train_step(self, loss_fn, batch_transform=None):
        step = make_train_step(loss_fn, None, batch_transform)
        compiled: dict[str, Callable] = {}

        def train_step(state, batch):
            if not compiled:  # the state's own layout, kept step after step
                layout = jax.tree.map(lambda x: x.sharding, state)
                compiled["step"] = jax.jit(
                    step,
                    in_shardings=(layout, self._batch),
                    out_shardings=(layout, self._replicated),
                    donate_argnums=0,
                )
            return compiled["step"](state, batch)

        return train_step

    def compile_eval_step(self, eval_fn):
        step = make_eval_step(eval_fn, None)
        return jax.jit(step, out_shardings=self._replicated)


def wants_sharding(mesh: Sequence[tuple[str, int]] | None, rules: Any) -> bool:
    """Whether ``config.mesh``/``config.partitioning`` ask for more than data parallelism."""
    sizes = partitioning.mesh_shape(mesh, jax.device_count())
    beyond_data = any(size > 1 for name, size in sizes.items() if name != DATA_AXIS)
    return beyond_data or partitioning.rules_from_config(rules) != partitioning.PRESETS["replicate"]


def get_strategy(
    name: str, *, mesh: Sequence[tuple[str, int]] | None = None, rules: Any = "replicate"
) -> Strategy:
    """``'jit'``, ``'pmap'``, ``'shard_map'``, ``'gspmd'`` (on ``mesh`` with the
    partition ``rules``: ``config.mesh``, ``config.partitioning``), or ``'auto'``:
    gspmd when the mesh or rules shard the state, or on GPU/TPU when a mesh is given;
    else shard_map when there are several devices, else jit."""
    if name not in STRATEGIES:
        raise ValueError(f"Unknown parallel strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    sharded = wants_sharding(mesh, rules)
    if name == "auto":
        if sharded or (mesh is not None and jax.default_backend() != "cpu"):
            name = "gspmd"
        else:
            name = "shard_map" if jax.device_count() > 1 else "jit"
    if name == "gspmd":
        return GspmdStrategy(mesh, rules)
    if sharded:
        raise ValueError(
            f"parallel {name!r} replicates the state; config.mesh {mesh!r} with partitioning "
            f"{rules!r} needs parallel 'gspmd' or 'auto' (or mesh (('data', -1),) and "
            "partitioning 'replicate')"
        )
    return {"jit": JitStrategy, "pmap": PmapStrategy, "shard_map": ShardMapStrategy}[name]()


def prefetch_to_device(
    batches: Iterator[dict[str, np.ndarray]],
    put_batch: Callable[[dict[str, np.ndarray]], PyTree],
    size: int = 2,
) -> Iterator[PyTree]:
    """Keeps ``size`` batches in flight to the devices ahead of the step."""
    queue: collections.deque = collections.deque()
    for batch in itertools.islice(batches, size):
        queue.append(put_batch(batch))
    while queue:
        yield queue.popleft()
        for batch in itertools.islice(batches, 1):
            queue.append(put_batch(batch))
