"""Two JAX processes on loopback (gloo collectives), two CPU devices each.

Each host reads its own shard of the data; the global batch is assembled from
both hosts' shares; the result must equal one device training on the
concatenated batches, and evaluation must count every example exactly once.
"""

import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from convjax.models import get_model
from convjax.tasks import get_task
from convjax.train.parallel import get_strategy
from convjax.train.state import TrainState

WORKER = os.path.join(os.path.dirname(__file__), "helpers", "multihost_worker.py")


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    from convjax.data.builders import get_builder
    from convjax.data.config import default_dataset_config

    dataset = default_dataset_config()
    dataset.data_dir = str(tmp_path_factory.mktemp("tfds"))
    get_builder(dataset)  # prepared once, before the hosts start
    return dataset.data_dir


@pytest.mark.parametrize("strategy_name", ["shard_map", "pmap"])
def test_two_hosts_match_one_device(digits_dir, tmp_path, strategy_name):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    outs = [str(tmp_path / f"host{i}.npz") for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, str(i), str(port), digits_dir, strategy_name, outs[i]],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        output, _ = proc.communicate(timeout=400)
        assert proc.returncode == 0, output[-4000:]
    hosts = [np.load(out) for out in outs]

    # The two hosts read different examples and agree on the replicated result.
    assert not np.array_equal(hosts[0]["images"], hosts[1]["images"])
    np.testing.assert_allclose(hosts[0]["losses"], hosts[1]["losses"], rtol=1e-6)
    for key in hosts[0].files:
        if key.startswith("param/"):
            np.testing.assert_allclose(hosts[0][key], hosts[1][key], rtol=1e-6)

    # Reference: one device, each global batch = host 0's share then host 1's.
    model = get_model("lenet5", batch_norm=True)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))
    params = variables.pop("params")
    state = TrainState.create(
        params=params, model_state=variables, tx=optax.sgd(0.05, 0.9), rng=jax.random.PRNGKey(1)
    )
    strategy = get_strategy("jit")
    step = strategy.compile_train_step(get_task("classification").loss_fn(model))
    state = strategy.put_state(state)
    losses = []
    for i in range(3):
        batch = {
            "image": np.concatenate([hosts[0]["images"][i], hosts[1]["images"][i]]),
            "label": np.concatenate([hosts[0]["labels"][i], hosts[1]["labels"][i]]),
        }
        state, metrics = step(state, strategy.put_batch(batch))
        losses.append(strategy.get_metrics(metrics)["loss"])
    np.testing.assert_allclose(hosts[0]["losses"], losses, rtol=2e-5)
    reference = strategy.get_state(state).params
    np.testing.assert_allclose(
        hosts[0]["param/conv1/kernel"], reference["conv1"]["kernel"], rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        hosts[0]["param/logits/bias"], reference["logits"]["bias"], rtol=1e-4, atol=1e-6
    )
    # Evaluation over both hosts counts the 359 test digits exactly once.
    assert float(hosts[0]["eval_count"]) == 359.0
