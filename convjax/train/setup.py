"""Building a configured model and its initial TrainState (no data, no devices).

Shared by the training loop, benchmarks and inference scripts; imports nothing
from the input pipeline.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from convjax.models import get_model_constructor
from convjax.tasks.base import Task
from convjax.train.optimizers import make_optimizer
from convjax.train.state import TrainState

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def config_kwargs(section: Any) -> dict[str, Any]:
    """A config section (ConfigDict, dict or None) as keyword arguments."""
    if section is None:
        return {}
    return section.to_dict() if isinstance(section, ml_collections.ConfigDict) else dict(section)


def build_model(config: ml_collections.ConfigDict, axis_name: str | None = None) -> nn.Module:
    """The configured model; BatchNorm is synchronised over ``axis_name`` if it has one."""
    ctor = get_model_constructor(config.model)
    kwargs = config_kwargs(config.get("model_kwargs"))
    dtype = config.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    model = ctor(**kwargs)
    fields = {f.name for f in dataclasses.fields(model)} if dataclasses.is_dataclass(model) else {}
    extra = {}
    if "dtype" in fields and "dtype" not in kwargs:
        extra["dtype"] = DTYPES[dtype]
    if "axis_name" in fields and "axis_name" not in kwargs:
        extra["axis_name"] = axis_name
    return model.clone(**extra) if extra else model


def init_train_state(
    model: nn.Module,
    task: Task,
    config: ml_collections.ConfigDict,
    image_shape: tuple[int, int, int],
) -> TrainState:
    """A fresh host-side TrainState; the model is initialised on ``[1, H, W, C]`` inputs.

    Task hooks: ``task.init_variables(model, rng, dummy)`` (e.g. load pretrained
    weights) and ``task.make_optimizer(optimizer_config, num_steps)``.
    """
    rng = jax.random.PRNGKey(config.seed)
    init_rng, state_rng = jax.random.split(rng)
    dummy = jnp.zeros((1, *image_shape), jnp.float32)
    init = getattr(task, "init_variables", None)
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        if init is not None:
            variables = init(model, init_rng, dummy)
        else:
            variables = jax.jit(lambda r, x: model.init(r, x, train=False))(init_rng, dummy)
        variables = dict(variables)
        params = variables.pop("params")
        # A task may build its own optimizer (e.g. transfer learning: frozen groups,
        # per-group learning rates); otherwise the config's optimizer.
        build_tx = getattr(task, "make_optimizer", None) or make_optimizer
        tx = build_tx(config.optimizer, config.num_train_steps)
        state = TrainState.create(params=params, model_state=variables, tx=tx, rng=state_rng)
        return jax.tree.map(np.asarray, state)
