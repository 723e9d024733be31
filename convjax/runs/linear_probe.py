"""Linear probe ("features once"): train only a new head on precomputed embeddings.

With the whole backbone frozen, the head's inputs need computing a single time
(:func:`convjax.models.transfer.compute_head_inputs`); :func:`fit_head` then trains a
:class:`~convjax.models.transfer.LinearHead` on them with the generic train step, a
whole epoch per compiled call. The head's parameters drop into the full model:
``params['head'] = head_params['head']``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from convjax.models.transfer import LinearHead
from convjax.tasks import Task, get_task
from convjax.train.optimizers import make_optimizer
from convjax.train.state import TrainState
from convjax.train.step import make_train_step

PyTree = Any


def make_epoch_fn(
    train_step: Callable, num_examples: int, batch_size: int
) -> Callable[[TrainState, PyTree, jax.Array], tuple[TrainState, PyTree]]:
    """A jitted epoch: shuffle, then ``num_examples // batch_size`` steps in one ``lax.scan``.

    ``data`` is a dict of device arrays with a leading [num_examples] axis; the epoch
    returns the new state and the metrics averaged over its steps.
    """
    steps = num_examples // batch_size
    if steps < 1:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} examples")

    @jax.jit
    def epoch(state: TrainState, data: PyTree, key: jax.Array):
        order = jax.random.permutation(key, num_examples)[: steps * batch_size]

        def step(state, idx):
            batch = jax.tree.map(lambda a: a[idx], data)
            return train_step(state, batch)

        state, metrics = jax.lax.scan(step, state, order.reshape(steps, batch_size))
        return state, jax.tree.map(jnp.mean, metrics)

    return epoch


def fit_head(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    optimizer_config: Mapping[str, Any] | ml_collections.ConfigDict,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    task: Task | None = None,
) -> tuple[PyTree, list[dict[str, float]]]:
    """Trains :class:`LinearHead` on embeddings ``features: [N, D]`` with ``labels: [N]``.

    ``task`` defaults to ``get_task('classification')``. Returns ``(head params
    {'head': {...}}, per-epoch mean metrics)``; put them into the full model with
    ``params['head'] = head_params['head']``.
    """
    task = task or get_task("classification")
    head = LinearHead(num_classes)
    steps = epochs * (len(features) // batch_size)
    rng = jax.random.key(seed)
    init_rng, state_rng, data_rng = jax.random.split(rng, 3)
    params = head.init(init_rng, jnp.zeros((1, features.shape[-1])))["params"]
    state = TrainState.create(
        params=params,
        tx=task.make_optimizer(optimizer_config, max(steps, 1), make_optimizer),
        rng=jax.random.key_data(state_rng),  # the raw uint32 [2] key TrainState holds
    )
    epoch = make_epoch_fn(make_train_step(task.loss_fn(head)), len(features), batch_size)
    data = {"image": jnp.asarray(features), "label": jnp.asarray(labels, jnp.int32)}
    history = []
    for e in range(epochs):
        state, metrics = epoch(state, data, jax.random.fold_in(data_rng, e))
        history.append({k: float(v) for k, v in metrics.items()})
    return jax.tree.map(np.asarray, state.params), history
