"""Activation maximisation through the generic train step raises the chosen units >= 10x;
the random transforms are the shifts and rotations they claim to be (numpy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import random_variables

from convjax.models import get_model
from convjax.tasks import get_task
from convjax.tasks.activation_max import ActivationMaxTask, frozen_features
from convjax.train.optimizers import make_optimizer
from convjax.train.parallel import JitStrategy
from convjax.train.state import TrainState
from convjax.viz.activation_max import random_transform, unit_activation


@pytest.fixture(autouse=True, scope="module")
def fast_compile():
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def test_activation_maximisation_raises_each_unit_tenfold():
    model = get_model("lenet5")
    shape = (1, 32, 32, 1)
    features = frozen_features(model, random_variables(model, shape), "conv2", shape)
    task = get_task("activation_max", layer="conv2", objective="neuron", pixel_range=(-1.0, 1.0))
    assert isinstance(task, ActivationMaxTask)
    units = np.array([0, 5, 9, 14], np.int32)
    start = 0.1 * np.random.default_rng(0).normal(size=(len(units), *shape[1:]))
    tx = task.make_optimizer({"name": "adam", "learning_rate": 0.05}, 60, make_optimizer)
    state = TrainState.create(
        params={"image": jnp.asarray(start, jnp.float32)},
        tx=tx,
        rng=jax.random.key_data(jax.random.key(0)),
    )
    strategy = JitStrategy()
    batch = {"index": np.arange(len(units), dtype=np.int32), "unit": units}
    eval_batch = {**batch, "mask": np.ones(len(units), np.float32)}

    def activations(state):
        images = state.params["image"]
        return np.asarray(unit_activation(features(images)["conv2"], units, "neuron"))

    before = activations(state)
    train_step = strategy.compile_train_step(task.loss_fn(features))
    placed = strategy.put_state(jax.tree.map(np.array, state))
    for _ in range(60):
        placed, metrics = train_step(placed, strategy.put_batch(batch))
    after = activations(strategy.get_state(placed))
    sums = strategy.compile_eval_step(task.eval_fn(features))(
        placed, strategy.put_batch(eval_batch)
    )
    np.testing.assert_allclose(float(sums["activation"]) / 4, after.mean(), rtol=1e-4)
    assert np.all(np.abs(before) > 0), before
    assert np.all(after >= 10 * np.abs(before)), (before, after)
    image = strategy.get_state(placed).params["image"]
    assert image.min() >= -1.0 and image.max() <= 1.0  # the projection held


def test_random_transform_shifts_and_rotates():
    image = np.random.default_rng(1).normal(size=(2, 9, 9, 3)).astype(np.float32)
    key = jax.random.key(3)
    shifted = np.asarray(random_transform(image, key, jitter=2))
    # The drawn shift: output(y, x) = input(y - dy, x - dx) away from the borders.
    k_shift = jax.random.split(key, 3)[0]
    dy, dx = np.asarray(jax.random.randint(k_shift, (2, 2), -2, 3))[0]
    np.testing.assert_allclose(
        shifted[0, 2:-2, 2:-2], image[0, 2 - dy : 7 - dy, 2 - dx : 7 - dx], atol=1e-5
    )
    rotated = np.asarray(random_transform(image, key, angles=(90.0,)))
    np.testing.assert_allclose(rotated, np.rot90(image, k=1, axes=(1, 2)), atol=1e-5)
    # Differentiable in the image.
    grad = jax.grad(lambda x: random_transform(x, key, jitter=1, scales=(1.1,)).sum())(image)
    assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0


def test_unit_activation_and_bad_objective():
    act = np.arange(2 * 3 * 3 * 4, dtype=np.float32).reshape(2, 3, 3, 4)
    np.testing.assert_array_equal(unit_activation(act, [1, 2], "neuron"), act[[0, 1], 1, 1, [1, 2]])
    np.testing.assert_allclose(
        unit_activation(act, [1, 2], "channel"), act[[0, 1], :, :, [1, 2]].mean(axis=(1, 2))
    )
    np.testing.assert_array_equal(unit_activation(act[:, 0, 0], [3, 0], "neuron"), [3, 36])
    with pytest.raises(ValueError, match="neuron, channel"):
        ActivationMaxTask(objective="pixel")
