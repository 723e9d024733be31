"""Transfer learning as a task: any task, fine-tuned from pretrained weights.

- **Pretrained weights** (:func:`convjax.models.pretrained.load_pretrained`): from a
  convjax workdir / orbax checkpoint folder or a torchvision ``.safetensors`` /
  ``.npz`` export, merged into the fresh initialisation in :meth:`init_variables`;
  paths matching ``exclude`` (the old head) keep their fresh values, which is how a
  head is replaced for a new number of classes.
- **Freezing by parameter path**: regular expressions over ``/``-joined parameter
  paths (``stage4/block1/conv2/kernel``) select frozen parameters. They get no
  gradient (``stop_gradient`` in the loss) and a zero update
  (``optax.multi_transform`` in :meth:`make_optimizer`), so neither gradients nor
  weight decay move them; frozen BatchNorm layers run on their running statistics
  and do not update them (:func:`convjax.models.transfer.frozen_batch_norm`).
- **Per-group learning rates**: ``lr_multipliers`` pairs a path pattern with a factor
  on the configured learning rate (and its schedule).

Everything else (the iterator of training batches, the metric checks, the eval sums)
is the wrapped ``base`` task's. ``get_task('transfer', base='classification',
pretrained=..., freeze=[BACKBONE], ...)`` builds one.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax

from convjax.models.pretrained import check_source, describe_loaded, load_pretrained
from convjax.models.transfer import (
    BACKBONE,
    compile_patterns,
    flat_paths,
    frozen_batch_norm,
    unflatten_paths,
)
from convjax.tasks.base import Batch, EvalFn, LossFn, OptimizerFactory, Task, TrainSampler
from convjax.tasks.registry import get_task, register_task

__all__ = ["BACKBONE", "FROZEN", "TransferTask", "label_params", "make_grouped_optimizer"]

PyTree = Any
FROZEN = "frozen"


def label_params(
    params: PyTree,
    freeze: Sequence[str] = (),
    lr_multipliers: Sequence[tuple[str, float]] = (),
) -> PyTree:
    """A pytree like ``params`` of group labels.

    ``'frozen'`` where a ``freeze`` pattern matches the path (``re.search``), else
    ``'lr<i>'`` for the first matching ``lr_multipliers[i]`` pattern, else ``'default'``.
    A pattern that matches no parameter raises ``ValueError`` (a typo would freeze nothing).
    """
    frozen = compile_patterns(freeze, "freeze")
    groups = compile_patterns([p for p, _ in lr_multipliers], "lr_multipliers")

    def label(path: str) -> str:
        if any(p.search(path) for p in frozen):
            return FROZEN
        for i, pattern in enumerate(groups):
            if pattern.search(path):
                return f"lr{i}"
        return "default"

    paths = list(flat_paths(params))
    for pattern in frozen + groups:
        if not any(pattern.search(path) for path in paths):
            raise ValueError(
                f"Pattern {pattern.pattern!r} matches no parameter; paths look like "
                f"{', '.join(paths[:4])} ..."
            )
    return unflatten_paths({path: label(path) for path in paths})


def make_grouped_optimizer(
    optimizer_config: Mapping[str, Any],
    num_steps: int,
    build: OptimizerFactory,
    freeze: Sequence[str] = (),
    lr_multipliers: Sequence[tuple[str, float]] = (),
) -> optax.GradientTransformation:
    """The configured optimizer per parameter group (``optax.multi_transform``).

    ``build(optimizer_config, num_steps)`` makes one optimizer from a config
    (:func:`convjax.train.optimizers.make_optimizer`). Frozen parameters get
    ``optax.set_to_zero()``; group ``i`` of ``lr_multipliers`` gets the optimizer
    with ``learning_rate * factor_i`` (same schedule shape).
    """
    compile_patterns(freeze, "freeze")
    transforms = {"default": build(optimizer_config, num_steps), FROZEN: optax.set_to_zero()}
    for i, (_, factor) in enumerate(lr_multipliers):
        scaled = dict(optimizer_config)
        scaled["learning_rate"] = float(optimizer_config["learning_rate"]) * float(factor)
        transforms[f"lr{i}"] = build(scaled, num_steps)
    labels = functools.partial(
        label_params, freeze=tuple(freeze), lr_multipliers=tuple(lr_multipliers)
    )
    return optax.multi_transform(transforms, labels)


@dataclasses.dataclass(frozen=True)
class TransferTask(Task):
    """Any task, fine-tuned from pretrained weights with parameter groups.

    Attributes:
      base: the wrapped task (e.g. ``get_task('classification')``).
      pretrained: weights to start from (see
        :func:`convjax.models.pretrained.load_pretrained`); ``None``: none.
      exclude: paths not loaded from ``pretrained`` (the replaced head).
      freeze: patterns of frozen parameter paths (:data:`BACKBONE`: all but the head).
      lr_multipliers: ``(pattern, factor)`` per-group learning rates.
    """

    base: Task
    pretrained: str | None = None
    exclude: tuple[str, ...] = ("^head/",)
    freeze: tuple[str, ...] = ()
    lr_multipliers: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        compile_patterns(self.exclude, "exclude")
        compile_patterns(self.freeze, "freeze")
        compile_patterns([p for p, _ in self.lr_multipliers], "lr_multipliers")
        if self.pretrained:
            check_source(self.pretrained)

    def init_variables(self, model: nn.Module, rng: jax.Array, dummy: jax.Array) -> PyTree:
        """The base task's initialisation, with ``pretrained``'s weights merged in.

        Traceable (``jax.eval_shape`` of it reads ``pretrained`` for its shapes only).
        """
        variables = dict(self.base.init_variables(model, rng, dummy))
        if self.pretrained:
            variables = load_pretrained(model, variables, self.pretrained, exclude=self.exclude)
            traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(variables))
            if not traced and jax.process_index() == 0:  # a real initialisation, not shapes
                print(describe_loaded(variables, self.pretrained, self.exclude), flush=True)
        return variables

    def make_optimizer(
        self,
        optimizer_config: Mapping[str, Any],
        num_steps: int,
        build: OptimizerFactory,
    ) -> optax.GradientTransformation:
        """:func:`make_grouped_optimizer`: frozen groups and per-group learning rates."""
        return make_grouped_optimizer(
            optimizer_config, num_steps, build, self.freeze, self.lr_multipliers
        )

    def train_sampler(self) -> TrainSampler:
        """The base task's training batches (its :meth:`~Task.train_iterator`)."""
        return self.base.train_iterator

    def check_labels(self, batch: Mapping[str, np.ndarray], num_classes: int) -> None:
        """The base task's check."""
        self.base.check_labels(batch, num_classes)

    def check_train_metrics(self, step: int, scalars: Mapping[str, float]) -> None:
        """The base task's checks."""
        self.base.check_train_metrics(step, scalars)

    def loss_fn(self, model: nn.Module) -> LossFn:
        """The base loss with frozen parameters behind ``stop_gradient`` and frozen
        BatchNorm layers on their running statistics."""
        base_loss = self.base.loss_fn(model)
        patterns = compile_patterns(self.freeze, "freeze")

        def loss_fn(params, model_state, batch: Batch, rng):
            # Frozen leaves get no gradient at all, so nothing is back-propagated
            # through a frozen backbone (and no optimizer can move them).
            flat = {
                path: jax.lax.stop_gradient(leaf) if any(p.search(path) for p in patterns) else leaf
                for path, leaf in flat_paths(params).items()
            }
            with frozen_batch_norm(self.freeze):
                return base_loss(unflatten_paths(flat), model_state, batch, rng)

        return loss_fn

    def eval_fn(self, model: nn.Module) -> EvalFn:
        """The base task's eval sums."""
        return self.base.eval_fn(model)


def _as_tuple(value: Any) -> tuple:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(tuple(v) if isinstance(v, list) else v for v in value)


@register_task("transfer")
def transfer_task(
    base: str = "classification",
    base_kwargs: Mapping[str, Any] | None = None,
    pretrained: str | None = None,
    exclude: Sequence[str] = ("^head/",),
    freeze: Sequence[str] = (),
    lr_multipliers: Sequence[tuple[str, float]] = (),
    allow_random_backbone: bool = False,
) -> TransferTask:
    """``get_task('transfer', base='classification', pretrained=..., freeze=[BACKBONE])``.

    Without ``pretrained`` weights a fine-tuning run would start from a random
    initialisation (behind a frozen backbone: a head trained on random features), so
    it is refused unless ``allow_random_backbone=True``, which then says so loudly.
    """
    if not pretrained:
        _refuse_random_backbone(freeze, allow_random_backbone)
    kwargs = dict(base_kwargs or {})
    return TransferTask(
        base=get_task(base, **kwargs),
        pretrained=pretrained or None,
        exclude=_as_tuple(exclude),
        freeze=_as_tuple(freeze),
        lr_multipliers=tuple((str(p), float(f)) for p, f in _as_tuple(lr_multipliers)),
    )


def _refuse_random_backbone(freeze: Sequence[str], allowed: bool) -> None:
    """Raises a one-line ``ValueError`` (or, when ``allowed``, warns on stderr) for a
    transfer task without pretrained weights."""
    what = "a frozen, randomly initialised backbone" if freeze else "a random initialisation"
    if not allowed:
        raise ValueError(
            f"task 'transfer' has no pretrained weights, so it would fine-tune {what}: give "
            "--config.task_kwargs.pretrained=FILE.safetensors (or .npz, a torchvision export) "
            "or =WORKDIR (a convjax run), or set --config.task_kwargs.allow_random_backbone=True "
            "to run without weights anyway"
        )
    print(
        f"warning: NO PRETRAINED WEIGHTS: fine-tuning {what} "
        "(task_kwargs.allow_random_backbone=True); the backbone's features are random",
        file=sys.stderr,
        flush=True,
    )
