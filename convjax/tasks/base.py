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

Every task subclasses :class:`Task`; its optional hooks (``init_variables``,
``make_optimizer``, ``train_sampler``, ``check_labels``, ``check_train_metrics``) have
defaults.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

PyTree = Any
Batch = Mapping[str, jax.Array]
# convjax.train.optimizers.make_optimizer: (optimizer_config, num_steps) -> optimizer
OptimizerFactory = Callable[[Mapping[str, Any], int], optax.GradientTransformation]
# (dataset_config, *, global_batch_size, seed, start_step) -> this host's batches
TrainSampler = Callable[..., Iterator[dict[str, np.ndarray]]]


def check_label_range(labels: np.ndarray, num_classes: int, what: str) -> None:
    """Raises a one-line ``ValueError`` naming the bad values when ``labels`` (host ints,
    padding already left out) are outside ``[0, num_classes)``."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = np.unique(labels[(labels < 0) | (labels >= num_classes)])
        raise ValueError(
            f"{what} {bad[:8].tolist()} outside [0, {num_classes}) (the model's "
            f"num_classes); check model_kwargs.num_classes and the dataset's labels"
        )


Metrics = dict[str, jax.Array]
LossFn = Callable[[PyTree, PyTree, Batch, jax.Array], tuple[jax.Array, tuple[Metrics, PyTree]]]
EvalFn = Callable[[PyTree, PyTree, Batch], Metrics]


class Task(abc.ABC):
    """What a batch means for a model: its loss and its metrics.

    Subclasses implement :meth:`loss_fn` and :meth:`eval_fn`. The other methods are
    hooks with working defaults that the training loop always calls; override one
    only when a task needs something else (pretrained weights, parameter groups,
    a special batch sampler, a host-side check of logged metrics).
    """

    @abc.abstractmethod
    def loss_fn(self, model: nn.Module) -> LossFn:
        """``loss_fn(params, model_state, batch, rng) -> (loss, (metrics, new_model_state))``."""

    @abc.abstractmethod
    def eval_fn(self, model: nn.Module) -> EvalFn:
        """``eval_fn(params, model_state, batch) -> sums`` (masked sums, with ``'count'``)."""

    def init_variables(self, model: nn.Module, rng: jax.Array, dummy: jax.Array) -> PyTree:
        """The model's initial variables for one dummy input ``dummy: [1, H, W, C]``.

        Default: ``model.init(rng, dummy, train=False)`` under ``jax.jit``. Override to
        start from pretrained weights or to initialise on another input layout.
        """
        return jax.jit(lambda r, x: model.init(r, x, train=False))(rng, dummy)

    def make_optimizer(
        self,
        optimizer_config: Mapping[str, Any],
        num_steps: int,
        build: OptimizerFactory,
    ) -> optax.GradientTransformation:
        """The optimizer for a run of ``num_steps`` steps.

        ``build`` is :func:`convjax.train.optimizers.make_optimizer`, handed in by the
        caller (tasks sit below ``train``). Default: ``build(optimizer_config, num_steps)``.
        Override for frozen groups or per-group learning rates.
        """
        return build(optimizer_config, num_steps)

    def train_iterator(
        self,
        dataset_config: ml_collections.ConfigDict,
        *,
        global_batch_size: int,
        seed: int,
        start_step: int,
    ) -> Iterator[dict[str, np.ndarray]]:
        """This host's training batches from step ``start_step + 1`` on, drawn by
        :meth:`train_sampler`."""
        return self.train_sampler()(
            dataset_config, global_batch_size=global_batch_size, seed=seed, start_step=start_step
        )

    def train_sampler(self) -> TrainSampler:
        """The function :meth:`train_iterator` draws batches with; it takes the arguments
        of :func:`convjax.data.pipeline.create_train_iterator`.

        Default: that function (shuffled examples). Override for another sampler
        (e.g. P identities x K images).
        """
        from convjax.data import pipeline  # the input pipeline; only needed to train

        return pipeline.create_train_iterator

    def check_labels(self, batch: Mapping[str, np.ndarray], num_classes: int) -> None:
        """Refuses a host batch whose class labels fall outside ``[0, num_classes)`` (a
        one-hot target of such a label is all zeros: it would train silently).

        Default: nothing (a task without class labels). Runs on the host, on numpy.
        """
        del batch, num_classes

    def check_train_metrics(self, step: int, scalars: Mapping[str, float]) -> None:
        """Sees every logged set of train metrics (host floats) on the chief host.

        Default: nothing. Override to warn about task-specific failure modes.
        """
        del step, scalars


def checked_labels(
    batches: Iterator[Mapping[str, np.ndarray]], task: Task, num_classes: int | None
) -> Iterator[Mapping[str, np.ndarray]]:
    """``batches`` with every host batch's labels checked by ``task.check_labels``
    against the model's ``num_classes`` (None: not checked). A min/max over a few ints on
    the host before the batch is placed: no device round trip."""
    for batch in batches:
        if num_classes is not None:
            task.check_labels(batch, num_classes)
        yield batch


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


def masked_sums(terms: Mapping[str, jax.Array], mask: jax.Array) -> Metrics:
    """What an ``eval_fn`` returns: each per-example term (``[B]``) summed over the valid
    examples (``mask: [B]``, 1 for real examples and 0 for padding), with ``'count'``."""
    mask = mask.astype(jnp.float32)
    return {k: jnp.sum(v * mask) for k, v in terms.items()} | {"count": jnp.sum(mask)}


def per_example_eval_fn(
    model: nn.Module, terms: Callable[[Any, Batch], Mapping[str, jax.Array]]
) -> EvalFn:
    """An ``eval_fn`` that runs ``model`` in eval mode on ``batch['image']`` and sums the
    per-example ``terms(outputs, batch)`` (each ``[B]``) with :func:`masked_sums`."""

    def eval_fn(params, model_state, batch: Batch):
        outputs, _ = apply_model(model, params, model_state, batch["image"], train=False)
        return masked_sums(terms(outputs, batch), batch["mask"])

    return eval_fn
