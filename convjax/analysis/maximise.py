"""Activation maximisation: images optimised to excite units, through the generic step."""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from convjax.analysis.mining import display_image
from convjax.analysis.network import Network
from convjax.analysis.plan import Plan
from convjax.tasks.activation_max import ActivationMaxTask, frozen_features
from convjax.train.loop import run_steps
from convjax.train.optimizers import make_optimizer
from convjax.train.parallel import JitStrategy
from convjax.train.state import TrainState

# For pictures: strong smoothing (the task's defaults are mild).
SMOOTH = {"tv_weight": 5.0, "l2_weight": 0.1}


def maximise_units(
    network: Network,
    plan: Plan,
    layer: str,
    units: np.ndarray,
    steps: int,
    seed: int = 0,
    **task_kwargs: Any,
) -> np.ndarray:
    """Images [len(units), H, W, C] in [0, 1] optimised (through the generic train step)
    to excite each unit of ``layer`` at its centre position (``task_kwargs``: see
    :class:`~convjax.tasks.activation_max.ActivationMaxTask`)."""
    dataset = network.dataset
    mean = np.asarray(dataset.mean if dataset.mean is not None else 0.0, np.float32)
    std = np.asarray(dataset.std if dataset.std is not None else 1.0, np.float32)
    pixel_range = (float(np.min(-mean / std)), float(np.max((1 - mean) / std)))
    shape = (1, *plan.image_shape)
    task = ActivationMaxTask(layer=layer, pixel_range=pixel_range, **task_kwargs)
    features = frozen_features(network.model, network.variables, layer, shape)
    tx = task.make_optimizer({"name": "adam", "learning_rate": 0.05}, steps, make_optimizer)
    start = 0.1 * np.random.default_rng(seed).normal(size=(len(units), *plan.image_shape))
    state = TrainState.create(
        params={"image": jnp.asarray(start, jnp.float32)},
        tx=tx,
        rng=jax.random.key_data(jax.random.key(seed)),
    )
    strategy = JitStrategy()
    batch = strategy.put_batch({"index": np.arange(len(units), dtype=np.int32), "unit": units})
    placed = run_steps(
        strategy.compile_train_step(task.loss_fn(features)),
        strategy.put_state(jax.tree.map(np.array, state)),
        itertools.repeat(batch),
        get_metrics=strategy.get_metrics,
        start_step=0,
        num_steps=steps,
        log_every=steps,
    )
    images = strategy.get_state(placed).params["image"]
    return np.stack([display_image(image, dataset) for image in images])
