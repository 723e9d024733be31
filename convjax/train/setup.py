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
    """The configured model; BatchNorm is synchronised over ``axis_name`` if it has one.

    Model fields the config does not set in ``model_kwargs`` are filled from the
    config when the model has them: ``dtype`` (``config.dtype``), ``axis_name`` and
    ``conv_impl`` (``config.conv_impl``).
    """
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
    if "conv_impl" in fields and "conv_impl" not in kwargs and config.get("conv_impl"):
        extra["conv_impl"] = config.conv_impl
    return model.clone(**extra) if extra else model


def create_train_state(
    model: nn.Module,
    task: Task,
    config: ml_collections.ConfigDict,
    image_shape: tuple[int, int, int],
) -> TrainState:
    """A fresh TrainState (jax arrays): the task's initial variables for a
    ``[1, H, W, C]`` dummy input and the task's optimizer for ``config.optimizer``.

    Traceable, so ``jax.eval_shape`` gives the state's shapes without initialising
    anything (see :func:`abstract_train_state`).
    """
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    dummy = jnp.zeros((1, *image_shape), jnp.float32)
    variables = dict(task.init_variables(model, init_rng, dummy))
    params = variables.pop("params")
    tx = task.make_optimizer(config.optimizer, config.num_train_steps, build=make_optimizer)
    return TrainState.create(params=params, model_state=variables, tx=tx, rng=state_rng)


def init_train_state(
    model: nn.Module,
    task: Task,
    config: ml_collections.ConfigDict,
    image_shape: tuple[int, int, int],
) -> TrainState:
    """A fresh host-side TrainState (numpy arrays), initialised on the host CPU."""
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        return jax.tree.map(np.asarray, create_train_state(model, task, config, image_shape))


def abstract_train_state(
    model: nn.Module,
    task: Task,
    config: ml_collections.ConfigDict,
    image_shape: tuple[int, int, int],
) -> TrainState:
    """The TrainState's structure with ``jax.ShapeDtypeStruct`` leaves (nothing computed):
    the target to restore a checkpoint into."""
    return jax.eval_shape(lambda: create_train_state(model, task, config, image_shape))
