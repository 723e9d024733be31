r"""Train-step throughput and compile time for the generic step.

  python benchmarks/train_step.py                       # LeNet-5, 32x32x1, batch 128
  python benchmarks/train_step.py --model=lenet5 --batch=128 --strategies=jit,pmap,shard_map

Prints, per strategy: compile time (lowering + XLA compile of the train step),
steady-state steps/s and images/s (median of timed windows), and the peak
resident memory of the process. Uses one simulated device per CPU core unless
XLA_FLAGS is set.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from convjax.host_devices import use_all_cpu_cores  # noqa: E402

use_all_cpu_cores()

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from convjax.tasks import get_task  # noqa: E402
from convjax.train.parallel import get_strategy  # noqa: E402
from convjax.train.setup import build_model, init_train_state  # noqa: E402


def benchmark(model_name, model_kwargs, image_shape, batch, strategy_name, steps, windows, dtype):
    config = ml_collections.ConfigDict(
        {
            "model": model_name,
            "model_kwargs": model_kwargs,
            "seed": 0,
            "num_train_steps": 1000,
            "dtype": dtype,
            "optimizer": {"name": "momentum", "learning_rate": 0.01},
        }
    )
    strategy = get_strategy(strategy_name)
    strategy.check_batch_size(batch)
    task = get_task("classification")
    model = build_model(config, strategy.axis_name)
    state = strategy.put_state(init_train_state(model, task, config, image_shape))
    rs = np.random.RandomState(0)
    num_classes = model_kwargs.get("num_classes", 10)
    host_batch = {
        "image": rs.rand(batch, *image_shape).astype(np.float32),
        "label": rs.randint(0, num_classes, batch).astype(np.int32),
    }
    device_batch = strategy.put_batch(host_batch)
    step = strategy.compile_train_step(task.loss_fn(model))
    start = time.perf_counter()
    state, metrics = step(state, device_batch)  # traces, compiles, runs once
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = step(state, device_batch)
        jax.block_until_ready(metrics)
        rates.append(steps / (time.perf_counter() - start))
    rate = statistics.median(rates)
    return compile_s, rate, rate * batch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--image", default="32,32,1", help="H,W,C")
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--strategies", default="jit,pmap,shard_map")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--dtype", default="float32", help="compute dtype: float32 | bfloat16")
    args = parser.parse_args()
    image_shape = tuple(int(v) for v in args.image.split(","))
    print(
        f"{args.model} {image_shape} batch {args.batch} {args.dtype} | jax {jax.__version__} | "
        f"{jax.device_count()} x {jax.devices()[0].device_kind} | {os.cpu_count()} cores"
    )
    print(f"{'strategy':<10} {'compile s':>10} {'steps/s':>10} {'images/s':>10}")
    for name in args.strategies.split(","):
        compile_s, steps_per_s, images_per_s = benchmark(
            args.model, {"num_classes": args.num_classes}, image_shape, args.batch, name,
            args.steps, args.windows, args.dtype,
        )
        print(f"{name:<10} {compile_s:>10.2f} {steps_per_s:>10.1f} {images_per_s:>10.0f}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
