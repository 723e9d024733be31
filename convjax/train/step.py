"""The generic train and eval steps, written once for every task and strategy.

Both are pure functions of ``(state, batch)``. When ``axis_name`` is given they
run inside a mapped context (``jax.pmap`` or ``jax.shard_map``) and average the
gradients, metrics and model state (BatchNorm statistics) over that named data
axis; with ``axis_name=None`` they are plain single-device functions for
``jax.jit``. The same Python function therefore serves every strategy.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from convjax.tasks.base import Batch, EvalFn, LossFn, Metrics
from convjax.train.state import TrainState

TrainStep = Callable[[TrainState, Batch], tuple[TrainState, Metrics]]
EvalStep = Callable[[TrainState, Batch], Metrics]
# transform(batch, step, device_index) -> batch: e.g. augmentation on device.
BatchTransform = Callable[[Batch, jax.Array, jax.Array], Batch]


def _pmean_floats(tree, axis_name: str):
    """Averages floating leaves over ``axis_name``; integer leaves (counters) are kept."""
    return jax.tree.map(
        lambda x: jax.lax.pmean(x, axis_name) if jnp.issubdtype(x.dtype, jnp.floating) else x,
        tree,
    )


def step_rng(base: jax.Array, step: jax.Array, axis_name: str | None) -> jax.Array:
    """The key for one step on one device: ``base`` folded with the step, then the device."""
    rng = jax.random.fold_in(base, step)
    if axis_name is not None:
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    return rng


def make_train_step(
    loss_fn: LossFn,
    axis_name: str | None = None,
    batch_transform: BatchTransform | None = None,
) -> TrainStep:
    """Builds ``train_step(state, batch) -> (state, metrics)`` from a task's loss.

    ``metrics`` always contains ``loss``, ``grad_norm`` and ``learning_rate`` when
    the optimizer exposes it (``optax.inject_hyperparams``), plus the task's own.
    ``batch_transform(batch, step, device_index)``, when given, maps each device's
    batch before the loss sees it (``device_index`` is 0 without ``axis_name``).
    """

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        if batch_transform is not None:
            index = jax.lax.axis_index(axis_name) if axis_name is not None else 0
            batch = batch_transform(batch, state.step, index)
        rng = step_rng(state.rng, state.step, axis_name)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (metrics, new_model_state)), grads = grad_fn(
            state.params, state.model_state, batch, rng
        )
        metrics = {**metrics, "loss": loss}
        if axis_name is not None:
            grads = jax.lax.pmean(grads, axis_name)
            metrics = jax.lax.pmean(metrics, axis_name)
            new_model_state = _pmean_floats(new_model_state, axis_name)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics["grad_norm"] = optax.global_norm(grads)
        hyperparams = getattr(opt_state, "hyperparams", None)
        if isinstance(hyperparams, dict) and "learning_rate" in hyperparams:
            metrics["learning_rate"] = jnp.asarray(hyperparams["learning_rate"], jnp.float32)
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            model_state=new_model_state,
            opt_state=opt_state,
        )
        return new_state, metrics

    return train_step


def make_eval_step(eval_fn: EvalFn, axis_name: str | None = None) -> EvalStep:
    """Builds ``eval_step(state, batch) -> sums`` (summed over the data axis)."""

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        sums = eval_fn(state.params, state.model_state, batch)
        if axis_name is not None:
            sums = jax.lax.psum(sums, axis_name)
        return sums

    return eval_step
