r"""Per-device bytes of the train state (parameters + optimizer state) under data
parallelism and fsdp, and the step time of fsdp vs data parallel.

  python benchmarks/sharding.py                  # ResNet-50 and VGG-16, momentum and Adam
  python benchmarks/sharding.py --live=resnet50,momentum,8 --time_model=resnet18_cifar

Runs on 8 simulated CPU devices (unless XLA_FLAGS is set). For each model and
optimizer, the state's layout under the ``gspmd`` strategy with the ``replicate``
preset (data parallel) and the ``fsdp`` preset on meshes with fsdp 2, 4 and 8 is
built from ``jax.eval_shape`` and the partition rules; the table gives each device's
bytes (the shard shapes its arrays have) and what of it is replicated small arrays.
``--live=MODEL,OPTIMIZER,FSDP`` also creates that state for real (``jit`` init with
the shardings) and checks the bytes each device holds against the table. The step
time compares data parallel and fsdp 8 at the same global batch, interleaved.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from convjax.host_devices import use_all_cpu_cores  # noqa: E402

use_all_cpu_cores(8)

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from convjax.tasks import get_task  # noqa: E402
from convjax.train.parallel import get_strategy  # noqa: E402
from convjax.train.setup import build_model, create_train_state  # noqa: E402

TASK = get_task("classification")
MODELS = {"resnet50": (224, 224, 3), "vgg16": (224, 224, 3), "resnet18_cifar": (32, 32, 3)}
OPTIMIZERS = {
    "momentum": {"name": "momentum", "learning_rate": 0.01},
    "adam": {"name": "adam", "learning_rate": 1e-3},
}


def _config(model: str, optimizer: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "model": model,
            "model_kwargs": {"num_classes": 1000 if model != "resnet18_cifar" else 10},
            "dtype": "float32",
            "conv_impl": "auto",
            "seed": 0,
            "num_train_steps": 1000,
            "optimizer": OPTIMIZERS[optimizer],
        }
    )


def _creator(model_name: str, optimizer: str):
    config = _config(model_name, optimizer)
    model = build_model(config)
    return lambda: create_train_state(model, TASK, config, MODELS[model_name]), model


def _strategy(fsdp: int):
    if fsdp == 1:
        return get_strategy("gspmd", mesh=(("data", -1), ("fsdp", 1)), rules="replicate")
    return get_strategy("gspmd", mesh=(("data", -1), ("fsdp", fsdp)), rules="fsdp")


def layout_bytes(create, fsdp: int) -> tuple[int, int, int]:
    """(per-device bytes, of which replicated, whole state bytes) from the shardings."""
    abstract = jax.eval_shape(create)
    shardings = _strategy(fsdp).shardings(abstract)
    per_device = replicated = whole = 0
    for leaf, sharding in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings), strict=True):
        size = leaf.dtype.itemsize
        whole += math.prod(leaf.shape) * size
        per_device += math.prod(sharding.shard_shape(leaf.shape)) * size
        if sharding.is_fully_replicated:
            replicated += math.prod(leaf.shape) * size
    return per_device, replicated, whole


def live_bytes(create, fsdp: int) -> list[int]:
    """Bytes each device holds after a sharded init (``jit`` with out_shardings)."""
    state = _strategy(fsdp).init_state(create)
    held: dict[int, int] = {}
    for leaf in jax.tree.leaves(state):
        for shard in leaf.addressable_shards:
            held[shard.device.id] = held.get(shard.device.id, 0) + shard.data.nbytes
    return [held[d.id] for d in jax.devices()]


def memory_table(models: list[str], optimizers: list[str]) -> None:
    mib = 2**20
    print("| model | optimizer | whole state | data parallel | fsdp 2 | fsdp 4 | fsdp 8 "
          "| replicated (fsdp 8) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for model in models:
        for optimizer in optimizers:
            create, _ = _creator(model, optimizer)
            cells, replicated, whole = [], 0, 0
            for fsdp in (1, 2, 4, 8):
                per_device, replicated, whole = layout_bytes(create, fsdp)
                cells.append(f"{per_device / mib:,.1f} MiB")
            print(f"| {model} | {optimizer} | {whole / mib:,.1f} MiB | {' | '.join(cells)} | "
                  f"{replicated / mib:,.2f} MiB |")  # fmt: skip


def step_time(model_name: str, batch: int, steps: int, rounds: int) -> None:
    """Data parallel vs fsdp 8 at the same global batch, in alternating rounds."""
    create, model = _creator(model_name, "momentum")
    rs = np.random.RandomState(0)
    host = {
        "image": rs.rand(batch, *MODELS[model_name]).astype(np.float32),
        "label": rs.randint(0, 10, batch).astype(np.int32),
    }
    runs = {}
    for fsdp in (1, 8):
        strategy = _strategy(fsdp)
        state = strategy.init_state(create)
        step = strategy.compile_train_step(TASK.loss_fn(model))
        placed = strategy.put_batch(host)
        state, metrics = step(state, placed)  # compiles
        jax.block_until_ready(metrics)
        runs[fsdp] = [step, state, placed, []]
    for _ in range(rounds):
        for run in runs.values():
            step, state, placed, times = run
            start = time.perf_counter()
            for _ in range(steps):
                state, metrics = step(state, placed)
                jax.block_until_ready(metrics)  # one step in flight: no CPU collective backlog
            times.append((time.perf_counter() - start) / steps)
            run[1] = state
    for fsdp, (_, _, _, times) in runs.items():
        name = "data parallel" if fsdp == 1 else f"fsdp {fsdp}"
        print(f"{model_name} batch {batch}, {name}: {1e3 * statistics.median(times):.1f} ms/step "
              f"(median of {rounds} rounds of {steps})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet50,vgg16")
    parser.add_argument("--optimizers", default="momentum,adam")
    parser.add_argument("--live", default="", help="MODEL,OPTIMIZER,FSDP: also create it")
    parser.add_argument("--time_model", default="resnet18_cifar", help="'' skips step times")
    parser.add_argument("--time_batch", type=int, default=32)
    parser.add_argument("--time_steps", type=int, default=5)
    parser.add_argument("--time_rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"jax {jax.__version__} | {jax.device_count()} x {jax.devices()[0].device_kind} "
          f"| load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    memory_table(args.models.split(","), args.optimizers.split(","))
    if args.live:
        model, optimizer, fsdp = args.live.split(",")
        create, _ = _creator(model, optimizer)
        expected = layout_bytes(create, int(fsdp))[0]
        held = live_bytes(create, int(fsdp))
        print(f"live {model} {optimizer} fsdp {fsdp}: each device holds {sorted(set(held))} B; "
              f"from the layout {expected} B")  # fmt: skip
        assert set(held) == {expected}, (held, expected)
    if args.time_model:
        step_time(args.time_model, args.time_batch, args.time_steps, args.time_rounds)


if __name__ == "__main__":
    main()
