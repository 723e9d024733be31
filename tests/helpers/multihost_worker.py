"""One host of a 2-process CPU cluster on loopback (run by tests/test_multihost.py).

usage: multihost_worker.py PROCESS_ID PORT DATA_DIR STRATEGY OUT.npz
"""

import os
import sys

process_id, port, data_dir, strategy_name, out = sys.argv[1:6]
os.environ["XLA_FLAGS"] = (
    "--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false"
)

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
    f"localhost:{port}", num_processes=2, process_id=int(process_id), initialization_timeout=120
)

import numpy as np  # noqa: E402

from convjax.data import pipeline  # noqa: E402
from convjax.data.config import default_dataset_config  # noqa: E402
from convjax.tasks import get_task  # noqa: E402
from convjax.train.optimizers import make_optimizer  # noqa: E402
from convjax.train.parallel import get_strategy  # noqa: E402
from convjax.train.setup import build_model  # noqa: E402
from convjax.train.state import TrainState  # noqa: E402

assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2

dataset = default_dataset_config()
dataset.data_dir = data_dir
dataset.image_size = (32, 32)
strategy = get_strategy(strategy_name)
strategy.check_batch_size(16)
import ml_collections  # noqa: E402

config = ml_collections.ConfigDict(
    {"model": "lenet5", "model_kwargs": {"batch_norm": True}, "dtype": "float32"}
)
model = build_model(config, strategy.axis_name)
variables = build_model(config).init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 1), np.float32))
params = variables.pop("params")
tx = make_optimizer({"name": "momentum", "learning_rate": 0.05}, 10)
state = TrainState.create(
    params=params, model_state=dict(variables), tx=tx, rng=jax.random.PRNGKey(1)
)
state = strategy.put_state(jax.tree.map(np.asarray, state))
task = get_task("classification")
train_step = strategy.compile_train_step(task.loss_fn(model))
eval_step = strategy.compile_eval_step(task.eval_fn(model))

host_batches = pipeline.create_train_iterator(dataset, global_batch_size=16, seed=0)
images, labels, losses = [], [], []
for _ in range(3):
    batch = next(host_batches)
    images.append(batch["image"])
    labels.append(batch["label"])
    state, metrics = train_step(state, strategy.put_batch(batch))
    losses.append(strategy.get_metrics(metrics)["loss"])

total = None
for batch in pipeline.create_eval_iterator(dataset, global_batch_size=64):
    sums = eval_step(state, strategy.put_batch(batch))
    total = sums if total is None else jax.tree.map(lambda a, b: a + b, total, sums)
total = strategy.get_metrics(total)
host_state = strategy.get_state(state)
np.savez(
    out,
    images=np.stack(images),
    labels=np.stack(labels),
    losses=np.array(losses),
    eval_count=total["count"],
    eval_correct=total["accuracy"],
    **{
        "param/" + "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(host_state.params)[0]
    },
)
jax.distributed.shutdown()
