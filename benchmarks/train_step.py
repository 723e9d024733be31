r"""Train-step throughput, compile time and a per-op profile of the generic step.

  python benchmarks/train_step.py                       # LeNet-5, 32x32x1, batch 128
  python benchmarks/train_step.py --model=lenet5 --batch=128 --strategies=jit,pmap,shard_map
  python benchmarks/train_step.py --model=resnet50 --image=224,224,3 --num_classes=1000 \
      --batch=4 --strategies=jit --conv_impl=cpu --profile=30

Prints, per strategy: compile time (lowering + XLA compile of the train step),
steady-state steps/s and images/s (median of timed windows, at most two steps in
flight as the training loop runs them), the process CPU time per step, and the peak
resident memory of the process. Uses one simulated device per CPU core unless
XLA_FLAGS is set.

``--profile=N`` traces a few steps with ``jax.profiler`` and prints the N compiled
ops (XLA fusions, convolutions, dots) that took the most time per step, each with
its output shape and the model code it came from: where a step's time goes. On a
loaded machine the trace's wall times include preemption; the medians over steps
and the shares are what to read.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import resource
import statistics
import sys
import tempfile
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


def run_steps(step, state, batch, steps):
    """``steps`` steps with at most two in flight (as ``convjax.train.loop`` runs them)."""
    previous = None
    for _ in range(steps):
        state, metrics = step(state, batch)
        if previous is not None:
            jax.block_until_ready(previous)
        previous = metrics
    jax.block_until_ready(metrics)
    return state


def op_sources(hlo_text: str) -> dict[str, tuple[str, str]]:
    """HLO instruction name -> (output shape, the model code it came from)."""
    sources = {}
    for line in hlo_text.splitlines():
        match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+) ", line)
        if match:
            origin = re.search(r'op_name="([^"]+)"', line)
            sources[match.group(1)] = (match.group(2), origin.group(1) if origin else "")
    return sources


def profile(step, state, batch, steps, hlo_text, top):
    """Prints the ``top`` compiled ops by median time per step from a profiler trace."""
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        state = run_steps(step, state, batch, steps)
        jax.profiler.stop_trace()
        path = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0]
        data = jax.profiler.ProfileData.from_file(path)
        durations = collections.defaultdict(list)
        for plane in data.planes:
            for line in plane.lines:
                if "XLAEigen" not in line.name and "PjRtCpuClient" not in line.name:
                    continue
                for event in line.events:
                    if not event.name.startswith(("ThunkExecutor", "$")):
                        durations[event.name].append(event.duration_ns / 1e6)
    # Per step: occurrences per step x the median duration (robust to preemption).
    per_step = {
        name: len(times) / steps * statistics.median(times) for name, times in durations.items()
    }
    total = sum(per_step.values())
    sources = op_sources(hlo_text)
    print(f"ops: {total:.1f} ms per step (all devices); top {top}:")
    for name, ms in sorted(per_step.items(), key=lambda kv: -kv[1])[:top]:
        shape, origin = sources.get(name, ("", ""))
        share = 100 * ms / total
        print(f"  {ms:9.2f} ms {share:5.1f}%  {name[:28]:28s} {shape[:30]:30s} {origin[-60:]}")
    return state


def benchmark(args, strategy_name, image_shape):
    config = ml_collections.ConfigDict(
        {
            "model": args.model,
            "model_kwargs": {"num_classes": args.num_classes, **json.loads(args.model_kwargs)},
            "seed": 0,
            "num_train_steps": 1000,
            "dtype": args.dtype,
            "conv_impl": args.conv_impl,
            "optimizer": {"name": "momentum", "learning_rate": 0.01},
        }
    )
    strategy = get_strategy(strategy_name)
    strategy.check_batch_size(args.batch)
    task = get_task("classification")
    model = build_model(config, strategy.axis_name)
    state = strategy.put_state(init_train_state(model, task, config, image_shape))
    rs = np.random.RandomState(0)
    host_batch = {
        "image": rs.rand(args.batch, *image_shape).astype(np.float32),
        "label": rs.randint(0, args.num_classes, args.batch).astype(np.int32),
    }
    device_batch = strategy.put_batch(host_batch)
    start = time.perf_counter()
    compiled = strategy.compile_train_step(task.loss_fn(model)).lower(state, device_batch).compile()
    compile_s = time.perf_counter() - start
    state = run_steps(compiled, state, device_batch, 1)
    rates, cpu = [], []
    for _ in range(args.windows):
        start, cpu_start = time.perf_counter(), time.process_time()
        state = run_steps(compiled, state, device_batch, args.steps)
        rates.append(args.steps / (time.perf_counter() - start))
        cpu.append((time.process_time() - cpu_start) / args.steps)
    if args.profile:
        profile(compiled, state, device_batch, args.steps, compiled.as_text(), args.profile)
    rate = statistics.median(rates)
    return compile_s, rate, rate * args.batch, statistics.median(cpu)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--image", default="32,32,1", help="H,W,C")
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--model_kwargs", default="{}", help="JSON, e.g. '{\"fc_width\": 512}'")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--strategies", default="jit,pmap,shard_map")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--dtype", default="float32", help="compute dtype: float32 | bfloat16")
    parser.add_argument("--conv_impl", default="auto", help="auto | cpu | xla")
    parser.add_argument("--profile", type=int, default=0, help="print the N costliest ops")
    args = parser.parse_args()
    image_shape = tuple(int(v) for v in args.image.split(","))
    print(
        f"{args.model} {image_shape} batch {args.batch} {args.dtype} conv_impl={args.conv_impl}"
        f" | jax {jax.__version__} | {jax.device_count()} x {jax.devices()[0].device_kind}"
        f" | {os.cpu_count()} cores | load average {os.getloadavg()[0]:.1f}"
    )
    header = (
        f"{'strategy':<10} {'compile s':>10} {'steps/s':>10} {'images/s':>10} {'cpu s/step':>11}"
    )
    for name in args.strategies.split(","):
        compile_s, steps_per_s, images_per_s, cpu = benchmark(args, name, image_shape)
        print(header)
        print(
            f"{name:<10} {compile_s:>10.2f} {steps_per_s:>10.2f} {images_per_s:>10.1f} {cpu:>11.3f}"
        )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
