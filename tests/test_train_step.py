"""The generic train step against gradients written from the formula in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from convjax.train.optimizers import make_optimizer, make_schedule
from convjax.train.parallel import DATA_AXIS, get_strategy
from convjax.train.state import TrainState
from convjax.train.step import step_rng


def linear_loss_fn(params, model_state, batch, rng):
    pred = batch["x"] @ params["w"] + params["b"]
    loss = jnp.mean((pred - batch["y"]) ** 2)
    return loss, ({"loss": loss}, model_state)


def numpy_sgd_step(w, b, x, y, lr):
    """One SGD step on mean squared error, gradient from the formula."""
    r = x @ w + b - y
    grad_w = 2.0 / len(x) * x.T @ r
    grad_b = 2.0 * r.mean()
    return w - lr * grad_w, b - lr * grad_b, np.mean(r**2)


@pytest.mark.parametrize("strategy_name", ["jit", "pmap", "shard_map"])
def test_sgd_steps_match_numpy(strategy_name):
    rs = np.random.RandomState(0)
    w, b = rs.randn(3).astype(np.float32), np.float32(0.5)
    strategy = get_strategy(strategy_name)
    assert strategy.num_devices == (1 if strategy_name == "jit" else 4)
    state = TrainState.create(
        params={"w": w, "b": b}, tx=optax.sgd(0.1), rng=jax.random.PRNGKey(0)
    )
    state = strategy.put_state(state)
    step = strategy.compile_train_step(linear_loss_fn)
    for _ in range(3):
        x, y = rs.randn(8, 3).astype(np.float32), rs.randn(8).astype(np.float32)
        state, metrics = step(state, strategy.put_batch({"x": x, "y": y}))
        w, b, loss = numpy_sgd_step(w, b, x, y, 0.1)
        np.testing.assert_allclose(strategy.get_metrics(metrics)["loss"], loss, rtol=1e-5)
    host = strategy.get_state(state)
    np.testing.assert_allclose(host.params["w"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(host.params["b"], b, rtol=1e-5, atol=1e-6)
    assert int(host.step) == 3


def test_step_keys_differ_per_step_and_device():
    base = jax.random.PRNGKey(3)
    keys = jax.pmap(
        lambda s: jax.random.key_data(step_rng(base, s, DATA_AXIS)), axis_name=DATA_AXIS
    )(jnp.zeros(4, jnp.int32))
    later = jax.pmap(
        lambda s: jax.random.key_data(step_rng(base, s, DATA_AXIS)), axis_name=DATA_AXIS
    )(jnp.ones(4, jnp.int32))
    all_keys = {tuple(np.asarray(k).ravel()) for k in [*keys, *later]}
    assert len(all_keys) == 8


def test_schedules_follow_their_formulas():
    cosine = make_schedule({"learning_rate": 1.0, "schedule": "cosine", "warmup_steps": 10}, 110)
    assert float(cosine(5)) == pytest.approx(0.5)
    assert float(cosine(10)) == pytest.approx(1.0)
    assert float(cosine(60)) == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.5)), abs=1e-6)
    step = make_schedule(
        {"learning_rate": 1.0, "schedule": "step", "decay_boundaries": (0.5,), "decay_factor": 0.1},
        100,
    )
    assert float(step(49)) == pytest.approx(1.0)
    assert float(step(51)) == pytest.approx(0.1)


def test_unknown_optimizer_and_schedule_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid: sgd, momentum, adam"):
        make_optimizer({"name": "adamax", "learning_rate": 1.0}, 10)
    with pytest.raises(ValueError, match="valid: constant, cosine"):
        make_schedule({"learning_rate": 1.0, "schedule": "exp"}, 10)


def test_weight_decay_and_clipping_applied():
    tx = make_optimizer(
        {"name": "sgd", "learning_rate": 0.5, "weight_decay": 0.1, "grad_clip_norm": 1.0}, 10
    )
    params = {"w": jnp.array([2.0, 0.0])}
    grads = {"w": jnp.array([0.0, 10.0])}
    updates, _ = tx.update(grads, tx.init(params), params)
    # clip: [0, 10] -> [0, 1]; decay adds 0.1 * w; sgd scales by -0.5.
    np.testing.assert_allclose(updates["w"], [-0.5 * 0.2, -0.5 * 1.0], rtol=1e-6)


def test_lbfgs_runs_through_the_generic_step_and_solves_least_squares():
    rs = np.random.RandomState(1)
    x, y = rs.randn(32, 3).astype(np.float32), rs.randn(32).astype(np.float32)
    tx = make_optimizer({"name": "lbfgs", "learning_rate": 0.5}, 50)
    params = {"w": np.zeros(3, np.float32), "b": np.float32(0.0)}
    strategy = get_strategy("jit")
    state = strategy.put_state(
        jax.tree.map(np.asarray, TrainState.create(params=params, tx=tx, rng=jax.random.PRNGKey(0)))
    )
    step = strategy.compile_train_step(linear_loss_fn)
    batch = strategy.put_batch({"x": x, "y": y})
    for _ in range(30):
        state, _ = step(state, batch)
    design = np.c_[x, np.ones(len(x))]
    solution = np.linalg.lstsq(design, y, rcond=None)[0]
    host = strategy.get_state(state).params
    np.testing.assert_allclose(host["w"], solution[:3], atol=1e-3)
    np.testing.assert_allclose(host["b"], solution[3], atol=1e-3)
