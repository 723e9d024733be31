"""Optimizers and learning-rate schedules from an ``optimizer`` ConfigDict.

Fields: ``name`` (see :data:`OPTIMIZERS`), ``learning_rate``, ``schedule`` (see
:data:`SCHEDULES`), ``warmup_steps``, ``end_learning_rate_factor`` (cosine/linear end
as a fraction of the peak), ``decay_boundaries``/``decay_factor`` (``step``
schedule, boundaries as fractions of the run), ``momentum``, ``nesterov``,
``weight_decay``, ``grad_clip_norm``. The learning rate is injected as a
hyperparameter so the train step can log it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop", "lars", "lbfgs")
SCHEDULES = ("constant", "cosine", "linear", "step")


def _get(config: Mapping[str, Any], key: str, default: Any) -> Any:
    value = config.get(key, default) if hasattr(config, "get") else default
    return default if value is None else value


def make_schedule(config: Mapping[str, Any], num_steps: int) -> optax.Schedule:
    """The learning-rate schedule over ``num_steps`` steps (warmup included)."""
    name = _get(config, "schedule", "constant")
    if name not in SCHEDULES:
        raise ValueError(f"Unknown schedule {name!r}; valid: {', '.join(SCHEDULES)}")
    peak = float(config["learning_rate"])
    warmup = int(_get(config, "warmup_steps", 0))
    end = peak * float(_get(config, "end_learning_rate_factor", 0.0))
    decay_steps = max(num_steps - warmup, 1)
    if name == "constant":
        main = optax.constant_schedule(peak)
    elif name == "cosine":
        main = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
    elif name == "linear":
        main = optax.linear_schedule(peak, end, decay_steps)
    else:
        fractions = _get(config, "decay_boundaries", (0.5, 0.75))
        factor = float(_get(config, "decay_factor", 0.1))
        main = optax.piecewise_constant_schedule(
            peak, {int(f * decay_steps): factor for f in fractions}
        )
    if warmup:
        return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])
    return main


def _matrices(params):
    """True for kernels (ndim > 1), False for biases and BatchNorm scales."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(config: Mapping[str, Any], num_steps: int) -> optax.GradientTransformation:
    """The optax transformation described by ``config`` for a run of ``num_steps``."""
    name = config["name"]
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    weight_decay = float(_get(config, "weight_decay", 0.0))
    momentum = float(_get(config, "momentum", 0.9))

    def build(learning_rate):
        if name == "sgd":
            return optax.sgd(learning_rate)
        if name == "momentum":
            nesterov = bool(_get(config, "nesterov", False))
            return optax.sgd(learning_rate, momentum, nesterov=nesterov)
        if name == "adam":
            return optax.adam(learning_rate)
        if name == "adamw":
            return optax.adamw(learning_rate, weight_decay=weight_decay)
        if name == "rmsprop":
            return optax.rmsprop(learning_rate, momentum=momentum)
        if name == "lars":  # You et al. 2017: no decay or trust ratio for biases/BatchNorm
            return optax.lars(
                learning_rate, weight_decay=weight_decay, momentum=momentum,
                weight_decay_mask=_matrices, trust_ratio_mask=_matrices,
            )  # fmt: skip
        # No line search: it needs the loss function itself, which a generic step
        # (and a step mapped over devices) does not hand to the optimizer.
        return optax.lbfgs(learning_rate, linesearch=None)

    tx = optax.inject_hyperparams(build)(learning_rate=make_schedule(config, num_steps))
    chain = []
    clip = _get(config, "grad_clip_norm", None)
    if clip:
        chain.append(optax.clip_by_global_norm(float(clip)))
    if weight_decay and name not in ("adamw", "lars"):
        chain.append(optax.add_decayed_weights(weight_decay))
    return optax.chain(*chain, tx) if chain else tx
