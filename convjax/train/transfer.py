"""Transfer learning on the generic train step.

- **Pretrained weights** (:func:`load_pretrained`): from a convjax orbax checkpoint
  (a workdir or its ``checkpoints/`` directory) or a torchvision state dict
  exported as ``.safetensors`` / ``.npz`` (:mod:`convjax.models.convert`), merged into
  a freshly initialised model; paths matching ``exclude`` (the old head) keep their
  fresh values, which is how a head is replaced for a new number of classes.
- **Freezing by parameter path** (:func:`make_transfer_optimizer`): regular
  expressions over ``/``-joined parameter paths (``stage4/block1/conv2/kernel``)
  select frozen parameters; ``optax.multi_transform`` gives them a zero update, so
  neither gradients nor weight decay move them. Frozen BatchNorm layers run on
  their running statistics and do not update them (:func:`frozen_batch_norm`).
- **Per-group learning rates**: ``lr_multipliers`` pairs a path pattern with a factor
  on the configured learning rate (and its schedule).
- **Features once** (:func:`head_inputs`, :func:`fit_head`): with the whole backbone
  frozen, the head's inputs are computed a single time and only the head is trained
  on them, with the same generic train step.

:class:`TransferTask` wraps any task with the above; ``get_task('transfer',
base='classification', pretrained=..., freeze=[BACKBONE], ...)`` builds one (this
module registers it when imported, e.g. by a fine-tuning config).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import traverse_util

from convjax.models.convert import convert_torchvision, load_state_dict
from convjax.tasks.base import Batch, EvalFn, LossFn, Task
from convjax.tasks.registry import get_task, register_task
from convjax.train.optimizers import make_optimizer
from convjax.train.state import TrainState
from convjax.train.step import make_train_step

PyTree = Any
BACKBONE = r"^(?!head/)"  # every parameter outside the module named 'head'
FROZEN = "frozen"


def flat_paths(tree: Mapping[str, Any]) -> dict[str, Any]:
    """``{'stage1/block0/conv1/kernel': leaf, ...}`` for a nested dict of arrays."""
    return traverse_util.flatten_dict(dict(tree), sep="/") if tree else {}


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    return traverse_util.unflatten_dict(dict(flat), sep="/")


def _compile(patterns: Sequence[str], what: str) -> list[re.Pattern]:
    if isinstance(patterns, str):
        raise ValueError(
            f"{what} must be a list of regular expressions; got the string {patterns!r}"
        )
    try:
        return [re.compile(p) for p in patterns]
    except re.error as e:
        raise ValueError(f"{what}: invalid regular expression ({e})") from None


# ------------------------------------------------------------------- groups
def label_params(
    params: PyTree,
    freeze: Sequence[str] = (),
    lr_multipliers: Sequence[tuple[str, float]] = (),
) -> PyTree:
    """A pytree like ``params`` of group labels.

    ``'frozen'`` where a ``freeze`` pattern matches the path (``re.search``), else
    ``'lr<i>'`` for the first matching ``lr_multipliers[i]`` pattern, else ``'default'``.
    """
    frozen = _compile(freeze, "freeze")
    groups = _compile([p for p, _ in lr_multipliers], "lr_multipliers")

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
    return _unflatten({path: label(path) for path in paths})


def make_transfer_optimizer(
    optimizer_config: Mapping[str, Any],
    num_steps: int,
    freeze: Sequence[str] = (),
    lr_multipliers: Sequence[tuple[str, float]] = (),
) -> optax.GradientTransformation:
    """The configured optimizer per parameter group (``optax.multi_transform``).

    Frozen parameters get ``optax.set_to_zero()``; group ``i`` of ``lr_multipliers``
    gets the optimizer with ``learning_rate * factor_i`` (same schedule shape).
    """
    _compile(freeze, "freeze")
    transforms = {
        "default": make_optimizer(optimizer_config, num_steps),
        FROZEN: optax.set_to_zero(),
    }
    for i, (_, factor) in enumerate(lr_multipliers):
        scaled = dict(optimizer_config)
        scaled["learning_rate"] = float(optimizer_config["learning_rate"]) * float(factor)
        transforms[f"lr{i}"] = make_optimizer(scaled, num_steps)
    labels = functools.partial(
        label_params, freeze=tuple(freeze), lr_multipliers=tuple(lr_multipliers)
    )
    return optax.multi_transform(transforms, labels)


@contextlib.contextmanager
def frozen_batch_norm(freeze: Sequence[str]) -> Iterator[None]:
    """Inside, every ``nn.BatchNorm`` whose parameters match ``freeze`` normalises with
    its running statistics and leaves them unchanged, even in training mode.

    Active while a model is traced (wrap the loss function's body, not the jit call).
    """
    patterns = _compile(freeze, "freeze")

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, nn.BatchNorm):
            return next_fun(*args, **kwargs)
        path = "/".join(module.path)
        if not any(p.search(f"{path}/scale") or p.search(f"{path}/bias") for p in patterns):
            return next_fun(*args, **kwargs)
        if module.use_running_average is None:
            return next_fun(*args, **{**kwargs, "use_running_average": True})
        # Set at construction (as every convjax model does): flax refuses it again at
        # call time, so flip the attribute of this traced instance for the call.
        previous = module.use_running_average
        object.__setattr__(module, "use_running_average", True)
        try:
            return next_fun(*args, **kwargs)
        finally:
            object.__setattr__(module, "use_running_average", previous)

    with nn.intercept_methods(interceptor):
        yield


# ------------------------------------------------------------------- weights
def _is_torch_file(source: str) -> bool:
    return source.endswith((".safetensors", ".npz"))


def load_checkpoint_variables(directory: str | os.PathLike, step: int | None = None) -> PyTree:
    """``{'params': ..., 'batch_stats': ...}`` from a convjax orbax checkpoint.

    ``directory`` is a workdir (its ``checkpoints/`` is used) or a checkpoint
    directory; ``step`` defaults to the latest.
    """
    directory = os.path.abspath(os.fspath(directory))
    if os.path.isdir(os.path.join(directory, "checkpoints")):
        directory = os.path.join(directory, "checkpoints")
    if not os.path.isdir(directory):
        raise ValueError(f"No checkpoint directory at {directory!r}")
    with ocp.CheckpointManager(directory) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise ValueError(f"No checkpoint saved in {directory!r}")
        items = manager.restore(step, args=ocp.args.StandardRestore())
    if "params" not in items:
        raise ValueError(f"Checkpoint {directory!r} step {step} has no 'params'")
    return {"params": items["params"], **dict(items.get("model_state") or {})}


def load_pretrained(
    model: nn.Module,
    variables: PyTree,
    source: str | os.PathLike,
    *,
    exclude: Sequence[str] = ("^head/",),
) -> dict[str, PyTree]:
    """``variables`` (a fresh init of ``model``) with every leaf replaced by ``source``'s,
    except paths matching ``exclude`` (searched in each collection, e.g. ``'^head/'``).

    ``source``: a ``.safetensors``/``.npz`` torchvision state dict, or a convjax
    workdir / checkpoint directory. Raises ``ValueError`` naming any parameter of
    ``model`` that ``source`` lacks or has with another shape (exclude it to keep it
    fresh, e.g. a head for a different number of classes).
    """
    source = os.fspath(source)
    patterns = _compile(exclude, "exclude")
    if _is_torch_file(source):
        loaded = convert_torchvision(model, load_state_dict(source), exclude=list(exclude))
    else:
        loaded = load_checkpoint_variables(source)
    merged: dict[str, PyTree] = {}
    problems = []
    for collection, tree in variables.items():
        have = flat_paths(loaded.get(collection, {}))
        out = {}
        for path, leaf in flat_paths(tree).items():
            if any(p.search(path) for p in patterns):
                out[path] = leaf
            elif path not in have:
                problems.append(f"{collection}/{path} is missing")
            elif np.shape(have[path]) != np.shape(leaf):
                problems.append(
                    f"{collection}/{path} has shape {np.shape(have[path])}, the model "
                    f"{np.shape(leaf)}"
                )
            else:
                out[path] = np.asarray(have[path], np.asarray(leaf).dtype)
        merged[collection] = _unflatten(out)
    if problems:
        raise ValueError(
            f"Cannot load {source!r} into {type(model).__name__}: {'; '.join(problems[:8])}"
            + (f" and {len(problems) - 8} more" if len(problems) > 8 else "")
            + ". Add the paths to exclude (e.g. '^head/' for a new number of classes)."
        )
    return merged


# ------------------------------------------------------------------- the task
@dataclasses.dataclass(frozen=True)
class TransferTask:
    """Any task, fine-tuned from pretrained weights with parameter groups.

    Attributes:
      base: the wrapped task (e.g. ``Classification()``).
      pretrained: weights to start from (see :func:`load_pretrained`); ``None``: none.
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
        _compile(self.exclude, "exclude")
        _compile(self.freeze, "freeze")
        _compile([p for p, _ in self.lr_multipliers], "lr_multipliers")
        if self.pretrained and not (
            _is_torch_file(self.pretrained) or os.path.isdir(self.pretrained)
        ):
            raise ValueError(
                f"pretrained={self.pretrained!r}: expected a .safetensors/.npz file or a "
                "convjax workdir/checkpoint directory that exists"
            )

    def init_variables(self, model: nn.Module, rng: jax.Array, dummy: jax.Array) -> PyTree:
        base_init = getattr(self.base, "init_variables", None)
        if base_init is not None:
            variables = base_init(model, rng, dummy)
        else:
            variables = jax.jit(lambda r, x: model.init(r, x, train=False))(rng, dummy)
        variables = jax.tree.map(np.asarray, dict(variables))
        if self.pretrained:
            variables = load_pretrained(model, variables, self.pretrained, exclude=self.exclude)
        return variables

    def make_optimizer(
        self, optimizer_config: Mapping[str, Any], num_steps: int
    ) -> optax.GradientTransformation:
        return make_transfer_optimizer(
            optimizer_config, num_steps, self.freeze, self.lr_multipliers
        )

    def loss_fn(self, model: nn.Module) -> LossFn:
        base_loss = self.base.loss_fn(model)
        patterns = _compile(self.freeze, "freeze")

        def loss_fn(params, model_state, batch: Batch, rng):
            # Frozen leaves get no gradient at all, so nothing is back-propagated
            # through a frozen backbone (and no optimizer can move them).
            flat = {
                path: jax.lax.stop_gradient(leaf) if any(p.search(path) for p in patterns) else leaf
                for path, leaf in flat_paths(params).items()
            }
            with frozen_batch_norm(self.freeze):
                return base_loss(_unflatten(flat), model_state, batch, rng)

        return loss_fn

    def eval_fn(self, model: nn.Module) -> EvalFn:
        return self.base.eval_fn(model)

    def __getattr__(self, name: str) -> Any:  # e.g. a base task's train_iterator
        if name.startswith("__") or name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)


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
) -> TransferTask:
    """``get_task('transfer', base='classification', freeze=[BACKBONE], ...)``."""
    kwargs = dict(base_kwargs or {})
    return TransferTask(
        base=get_task(base, **kwargs),
        pretrained=pretrained or None,
        exclude=_as_tuple(exclude),
        freeze=_as_tuple(freeze),
        lr_multipliers=tuple((str(p), float(f)) for p, f in _as_tuple(lr_multipliers)),
    )


# ------------------------------------------------------------------- features once
def head_inputs(
    model: nn.Module, variables: PyTree, x: jax.Array, *, head: str = "head"
) -> jax.Array:
    """What the module ``head`` receives for inputs ``x`` (eval mode): [B, D] embeddings.

    For a ResNet that is the globally pooled last stage; for VGG/AlexNet the ReLU'd
    ``fc7``. Jit it (or use :func:`compute_head_inputs`).
    """
    captured = []

    def capture(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and "/".join(context.module.path) == head:
            captured.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(capture):
        model.apply(variables, x, train=False)
    if not captured:
        raise ValueError(f"{type(model).__name__} has no module named {head!r}")
    return captured[0]


def compute_head_inputs(
    model: nn.Module,
    variables: PyTree,
    images: np.ndarray,
    *,
    batch_size: int = 256,
    head: str = "head",
) -> np.ndarray:
    """:func:`head_inputs` for a whole array of images [N, H, W, C] -> [N, D], in batches."""
    extract = jax.jit(functools.partial(head_inputs, model, head=head))
    n = len(images)
    pad = (-n) % batch_size
    padded = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    chunks = [
        np.asarray(extract(variables, padded[i : i + batch_size]))
        for i in range(0, len(padded), batch_size)
    ]
    return np.concatenate(chunks)[:n]


class LinearHead(nn.Module):
    """The replaced head alone: embeddings [B, D] -> logits [B, num_classes].

    Its parameters sit under ``head`` like a full model's, so they drop into it.
    """

    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return nn.Dense(self.num_classes, name="head")(x).astype(jnp.float32)


def make_epoch_fn(
    train_step: Callable, num_examples: int, batch_size: int
) -> Callable[[TrainState, PyTree, jax.Array], tuple[TrainState, PyTree]]:
    """A jitted epoch: shuffle, then ``num_examples // batch_size`` steps in one ``lax.scan``.

    ``data`` is a dict of device arrays with a leading [num_examples] axis.
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
    """Trains :class:`LinearHead` on precomputed embeddings [N, D] with the generic step.

    Returns ``(head params {'head': {...}}, per-epoch mean metrics)``; put them into
    the full model with ``params['head'] = head_params['head']``.
    """
    task = task or get_task("classification")
    head = LinearHead(num_classes)
    steps = epochs * (len(features) // batch_size)
    rng = jax.random.key(seed)
    init_rng, state_rng, data_rng = jax.random.split(rng, 3)
    params = head.init(init_rng, jnp.zeros((1, features.shape[-1])))["params"]
    state = TrainState.create(
        params=params,
        tx=make_optimizer(optimizer_config, max(steps, 1)),
        rng=jax.random.key_data(state_rng),  # the raw uint32 [2] key TrainState holds
    )
    epoch = make_epoch_fn(make_train_step(task.loss_fn(head)), len(features), batch_size)
    data = {"image": jnp.asarray(features), "label": jnp.asarray(labels, jnp.int32)}
    history = []
    for e in range(epochs):
        state, metrics = epoch(state, data, jax.random.fold_in(data_rng, e))
        history.append({k: float(v) for k, v in metrics.items()})
    return jax.tree.map(np.asarray, state.params), history
