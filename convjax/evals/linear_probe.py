"""Linear probe ("features once"): train only a new head on precomputed embeddings.

With the whole backbone frozen, the head's inputs need computing a single time
(:func:`convjax.models.transfer.compute_head_inputs`); :func:`fit_head` then trains a
:class:`~convjax.models.transfer.LinearHead` on them with the generic train step, a
whole epoch per compiled call. The head's parameters drop into the full model:
``params['head'] = head_params['head']``. The ``linear_probe`` evaluator
(:class:`LinearProbe`) does both on a run's state: ``config.evals.probe =
{"type": "linear_probe", "options": {"epochs": 10}}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from convjax.data import samplers
from convjax.evals.base import EvalContext, EvalResult, EvalState, Evaluator, register_evaluator
from convjax.models.transfer import LinearHead, compute_head_inputs
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


@register_evaluator("linear_probe")
class LinearProbe(Evaluator):
    """``linear_probe``: how linearly separable the model's features are. The inputs of
    the module ``head`` (:func:`~convjax.models.transfer.compute_head_inputs`) of every
    image of ``train_split`` train a fresh :class:`LinearHead` (:func:`fit_head`: Adam,
    ``epochs`` over batches of ``batch_size``); figures: its ``accuracy`` and ``loss``
    on the split's features."""

    def __init__(
        self,
        name: str,
        context: EvalContext,
        dataset: ml_collections.ConfigDict,
        train_split: str | None = None,
        head: str = "head",
        epochs: int = 10,
        batch_size: int = 64,
        learning_rate: float = 1e-2,
    ):
        super().__init__(name, context, dataset)
        if context.num_classes is None:
            raise ValueError(f"evals.{name}: type 'linear_probe' needs model_kwargs.num_classes")
        self.train_split = train_split or dataset.train_split
        self.head, self.epochs, self.batch_size = head, int(epochs), int(batch_size)
        self.optimizer = {"name": "adam", "learning_rate": float(learning_rate)}

    def features(self, state: EvalState, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(head inputs [N, D], labels [N]) of ``split``."""
        host = state.host
        variables = {"params": host.params, **host.model_state}
        data = samplers.load_split(self.dataset, split)
        features = compute_head_inputs(
            self.context.model,
            variables,
            data["image"],
            batch_size=self.context.eval_batch_size,
            head=self.head,
        )
        return features, data["label"]

    def evaluate(self, state: EvalState) -> EvalResult:
        train_x, train_y = self.features(state, self.train_split)
        test_x, test_y = self.features(state, self.split)
        num_classes = self.context.num_classes
        head_params, _ = fit_head(
            train_x, train_y, num_classes, self.optimizer,
            epochs=self.epochs, batch_size=min(self.batch_size, len(train_x)),
            seed=int(self.context.config.get("seed", 0)),
        )  # fmt: skip
        logits = LinearHead(num_classes).apply({"params": head_params}, jnp.asarray(test_x))
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(test_y))
        accuracy = float(np.mean(np.argmax(np.asarray(logits), -1) == test_y))
        return EvalResult({"accuracy": accuracy, "loss": float(jnp.mean(losses))})
