"""Trains one model with ``jit`` on one device and with ``gspmd`` on several meshes of
8 simulated CPU devices (run by tests/test_sharding.py in its own process).

usage: sharding_equality_worker.py MODEL STEPS BATCH LEARNING_RATE OUT.npz

Every run starts from the same initial state and sees the same global batches; the
output holds each run's losses and final parameters and BatchNorm statistics
(``<run>/loss``, ``<run>/<path>``), the partition spec of every parameter under fsdp,
and each run's per-device bytes of the state.
"""

import os
import sys

os.environ["XLA_FLAGS"] = (
    "--xla_force_host_platform_device_count=8 --xla_cpu_multi_thread_eigen=false"
)
model_name, out = sys.argv[1], sys.argv[5]
steps, batch_size, learning_rate = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from convjax.tasks import get_task  # noqa: E402
from convjax.train.parallel import get_strategy  # noqa: E402
from convjax.train.partitioning import path_name  # noqa: E402
from convjax.train.setup import build_model, create_train_state  # noqa: E402

MODELS = {
    "resnet18_cifar": {"stage_widths": (8, 16, 32, 64)},
    "vgg16_bn": {"adaptive_pool_size": 1, "fc_width": 64, "num_classes": 10, "dropout_rate": 0.0},
}
MESHES = {"8x1": 8, "4x2": 4, "2x4": 2, "1x8": 1}  # name -> data size (fsdp = 8 / data)
IMAGE_SHAPE = (16, 16, 3)

config = ml_collections.ConfigDict(
    {
        "model": model_name,
        "model_kwargs": MODELS[model_name],
        "dtype": "float32",
        "conv_impl": "auto",
        "seed": 0,
        "num_train_steps": steps,
        "optimizer": {"name": "momentum", "learning_rate": learning_rate, "momentum": 0.9},
    }
)
task = get_task("classification")
rs = np.random.RandomState(0)
batches = [
    {
        "image": rs.rand(batch_size, *IMAGE_SHAPE).astype(np.float32),
        "label": rs.randint(0, 10, batch_size).astype(np.int32),
    }
    for _ in range(steps)
]


def train(strategy):
    model = build_model(config, strategy.axis_name)
    state = strategy.init_state(lambda: create_train_state(model, task, config, IMAGE_SHAPE))
    per_device = {}
    for leaf in jax.tree.leaves(state):
        for shard in leaf.addressable_shards:
            per_device[shard.device.id] = per_device.get(shard.device.id, 0) + shard.data.nbytes
    step = strategy.compile_train_step(task.loss_fn(model))
    losses = []
    for batch in batches:
        state, metrics = step(state, strategy.put_batch(batch))
        losses.append(strategy.get_metrics(metrics)["loss"])  # one step in flight at most
    host = strategy.get_state(state)
    arrays = {"loss": np.array(losses), "bytes_per_device": np.array(sorted(per_device.values()))}
    for path, leaf in jax.tree_util.tree_flatten_with_path(
        {"params": host.params, "model_state": host.model_state}
    )[0]:
        arrays[path_name(path)] = np.asarray(leaf)
    return arrays, state


results = {}
for name in ("jit",):
    arrays, _ = train(get_strategy(name))
    results.update({f"{name}/{k}": v for k, v in arrays.items()})
for name, data in MESHES.items():
    strategy = get_strategy("gspmd", mesh=(("data", data), ("fsdp", 8 // data)), rules="fsdp")
    arrays, state = train(strategy)
    results.update({f"{name}/{k}": v for k, v in arrays.items()})
    if name == "1x8":
        for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
            results[f"spec/{path_name(path)}"] = np.array(str(leaf.sharding.spec))
np.savez(out, **results)
