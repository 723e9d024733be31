"""What a task is: the contract between a model, a batch and the generic train step.

A task turns a model into two pure functions:

- ``loss_fn(params, model_state, batch, rng) -> (loss, (metrics, new_model_state))``:
  differentiated by the generic train step; ``metrics`` are per-device means
  (scalars) that the step averages over the data axis.
- ``eval_fn(params, model_state, batch) -> sums``: per-batch *sums* of metrics over
  the valid examples (``batch['mask']`` is 1 for real examples and 0 for padding),
  always including ``'count'``; the loop adds them over the eval set and divides
  by ``count``, so every eval example is counted exactly once.

``params`` is whatever pytree is optimised (model weights, or an image in style
transfer); ``model_state`` holds the non-trainable collections (``batch_stats``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import flax.linen as nn
import jax

PyTree = Any
Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
LossFn = Callable[[PyTree, PyTree, Batch, jax.Array], tuple[jax.Array, tuple[Metrics, PyTree]]]
EvalFn = Callable[[PyTree, PyTree, Batch], Metrics]


class Task(Protocol):
    """A task knows what a batch means for a model: its loss and its metrics."""

    def loss_fn(self, model: nn.Module) -> LossFn: ...

    def eval_fn(self, model: nn.Module) -> EvalFn: ...


def apply_model(
    model: nn.Module,
    params: PyTree,
    model_state: PyTree,
    inputs: jax.Array,
    *,
    train: bool,
    rng: jax.Array | None = None,
    **kwargs: Any,
) -> tuple[Any, PyTree]:
    """Runs ``model`` and returns ``(outputs, new_model_state)``.

    In training mode the mutable collections (``batch_stats``) are updated and
    ``rng`` feeds Dropout; in eval mode ``model_state`` comes back unchanged.
    """
    variables = {"params": params, **model_state}
    if train and model_state:
        outputs, new_state = model.apply(
            variables,
            inputs,
            train=True,
            mutable=list(model_state),
            rngs={"dropout": rng} if rng is not None else None,
            **kwargs,
        )
        return outputs, dict(new_state)
    rngs = {"dropout": rng} if (train and rng is not None) else None
    return model.apply(variables, inputs, train=train, rngs=rngs, **kwargs), model_state
