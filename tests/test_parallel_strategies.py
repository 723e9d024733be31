"""jit, pmap and shard_map run the same step to the same losses and parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from convjax.models import get_model
from convjax.tasks import get_task
from convjax.train.parallel import get_strategy
from convjax.train.state import TrainState


def run(strategy_name, batches, steps=4):
    strategy = get_strategy(strategy_name)
    model = get_model("lenet5", batch_norm=True, axis_name=strategy.axis_name)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))
    params = variables.pop("params")
    state = TrainState.create(
        params=params, model_state=variables, tx=optax.sgd(0.05, 0.9), rng=jax.random.PRNGKey(1)
    )
    state = strategy.put_state(state)
    task = get_task("classification")
    train_step = strategy.compile_train_step(task.loss_fn(model))
    eval_step = strategy.compile_eval_step(task.eval_fn(model))
    losses = []
    for batch in batches[:steps]:
        state, metrics = train_step(state, strategy.put_batch(batch))
        losses.append(strategy.get_metrics(metrics)["loss"])
    eval_batch = dict(batches[0], mask=np.r_[np.ones(12), np.zeros(4)].astype(np.float32))
    sums = strategy.get_metrics(eval_step(state, strategy.put_batch(eval_batch)))
    return np.array(losses), strategy.get_state(state), sums


@pytest.fixture(scope="module")
def results():
    rs = np.random.RandomState(0)
    batches = [
        {
            "image": rs.rand(16, 32, 32, 1).astype(np.float32),
            "label": rs.randint(0, 10, 16).astype(np.int32),
        }
        for _ in range(4)
    ]
    return {name: run(name, batches) for name in ("jit", "pmap", "shard_map", "gspmd")}


@pytest.mark.parametrize("name", ["pmap", "shard_map", "gspmd"])
def test_strategies_agree_with_single_device(results, name):
    ref_losses, ref_state, ref_sums = results["jit"]
    losses, state, sums = results[name]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert not np.allclose(ref_losses[0], ref_losses[-1])  # training moved
    flat_ref = jax.tree.leaves(ref_state.checkpoint_items())
    flat = jax.tree.leaves(state.checkpoint_items())
    for a, b in zip(flat_ref, flat, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # Synchronised BatchNorm: running statistics equal the whole-batch ones.
    np.testing.assert_allclose(
        state.model_state["batch_stats"]["bn1"]["mean"],
        ref_state.model_state["batch_stats"]["bn1"]["mean"],
        rtol=1e-5,
        atol=1e-6,
    )
    assert sums["count"] == 12
    for key in ref_sums:
        np.testing.assert_allclose(sums[key], ref_sums[key], rtol=1e-5)


def test_batch_that_does_not_divide_is_rejected_before_compiling():
    strategy = get_strategy("shard_map")
    with pytest.raises(ValueError, match=r"batch_size 10 does not divide over 4 device"):
        strategy.check_batch_size(10)
    strategy.check_batch_size(12)


def test_unknown_strategy_lists_choices():
    with pytest.raises(ValueError, match="valid: auto, jit, pmap, shard_map, gspmd"):
        get_strategy("dp")
