r"""convjax vs PyTorch: train-step throughput on this machine's CPUs, side by side.

    python benchmarks/vs_pytorch.py            # every model, 5 rounds
    python benchmarks/vs_pytorch.py --quick    # LeNet-5, ResNet-18-CIFAR, ResNet-50 b8; 3 rounds
    python benchmarks/vs_pytorch.py --models=resnet50:8 --rounds=7 --sides=shard_map,torch

One train step is forward, backward and an SGD-momentum update (learning rate 0.01,
momentum 0.9) of softmax cross-entropy on a fixed random batch, in float32. Sides:

- ``shard_map``: convjax's generic train step (``convjax.train``) under ``jax.shard_map``
  over one simulated device per core, as ``experiments/train.py`` runs on a CPU host.
- ``jit``: the same step jitted on one device (XLA's default multi-threaded CPU runtime).
- ``torch``: the same architecture in PyTorch (``benchmarks/torch_models.py``, parameter
  counts asserted equal to the zoo's), channels-last, PyTorch's default thread count.

Each side is its own worker process; all of them build the model first (compile time is
the JAX trace + lower + XLA compile of the step, and for PyTorch the first step), then
the workers take turns: each round every side runs about ``--round_s`` seconds of steps
while the others wait, and the order rotates, so drift in the machine's load hits all of
them. The table gives the median images/s over rounds with the min-max spread, the
ratio of convjax's faster strategy to PyTorch, and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (registry name, model kwargs, input [H, W, C], classes)
MODELS = {
    "lenet5": ("lenet5", {}, (32, 32, 1), 10),
    "resnet18_cifar": ("resnet18_cifar", {}, (32, 32, 3), 10),
    "vgg16_bn_cifar": (
        "vgg16_bn",
        {"num_classes": 10, "adaptive_pool_size": None, "fc_width": 512},
        (32, 32, 3),
        10,
    ),
    "resnet50": ("resnet50", {}, (224, 224, 3), 1000),
}
FULL = ("lenet5:256", "resnet18_cifar:128", "vgg16_bn_cifar:64", "resnet50:8", "resnet50:32")
QUICK = ("lenet5:256", "resnet18_cifar:128", "resnet50:8")
SIDES = ("shard_map", "jit", "torch")


# ----------------------------------------------------------------------------- workers


class JaxSide:
    """convjax's generic train step for one model, compiled for one strategy."""

    def __init__(self, strategy_name: str, conv_impl: str):
        import jax

        self.jax = jax
        self.strategy_name = strategy_name
        self.conv_impl = conv_impl

    def setup(self, model: str, batch: int) -> dict:
        import ml_collections
        import numpy as np

        from convjax.tasks import get_task
        from convjax.train.parallel import get_strategy
        from convjax.train.setup import build_model, init_train_state

        jax = self.jax
        name, kwargs, image_shape, classes = MODELS[model]
        config = ml_collections.ConfigDict(
            {
                "model": name,
                "model_kwargs": kwargs,
                "seed": 0,
                "num_train_steps": 1000,
                "dtype": "float32",
                "conv_impl": self.conv_impl,
                "optimizer": {"name": "momentum", "learning_rate": 0.01, "momentum": 0.9},
            }
        )
        strategy = get_strategy(self.strategy_name)
        strategy.check_batch_size(batch)
        task = get_task("classification")
        model_ = build_model(config, strategy.axis_name)
        host_state = init_train_state(model_, task, config, image_shape)
        params = sum(int(np.size(x)) for x in jax.tree.leaves(host_state.params))
        rs = np.random.RandomState(0)
        host_batch = {
            "image": rs.standard_normal((batch, *image_shape)).astype(np.float32),
            "label": rs.randint(0, classes, batch).astype(np.int32),
        }
        self.state = strategy.put_state(host_state)
        self.batch = strategy.put_batch(host_batch)
        start = time.perf_counter()
        jitted = strategy.compile_train_step(task.loss_fn(model_))
        self.step = jitted.lower(self.state, self.batch).compile()
        compile_s = time.perf_counter() - start
        first_s = self.run(1)
        return {"params": params, "compile_s": compile_s, "first_step_s": first_s,
                "devices": jax.device_count()}

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` steps, at most two in flight (as convjax's step loop runs:
        a longer backlog of launches can deadlock XLA's CPU collectives)."""
        start = time.perf_counter()
        previous = None
        for _ in range(steps):
            self.state, metrics = self.step(self.state, self.batch)
            if previous is not None:
                self.jax.block_until_ready(previous)
            previous = metrics
        self.jax.block_until_ready((self.state, metrics))
        return time.perf_counter() - start


class TorchSide:
    """The same architecture in PyTorch, channels-last, SGD with momentum."""

    def __init__(self):
        import torch

        self.torch = torch

    def setup(self, model: str, batch: int) -> dict:
        from torch_models import TORCH_MODELS

        torch = self.torch
        torch.manual_seed(0)
        _, _, (h, w, c), classes = MODELS[model]
        net = TORCH_MODELS[model]().to(memory_format=torch.channels_last)
        net.train()
        params = sum(p.numel() for p in net.parameters())
        self.net = net
        self.opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        self.x = torch.randn(batch, c, h, w).to(memory_format=torch.channels_last)
        self.y = torch.randint(0, classes, (batch,))
        first_s = self.run(1)
        return {"params": params, "compile_s": 0.0, "first_step_s": first_s,
                "threads": torch.get_num_threads()}

    def run(self, steps: int) -> float:
        torch = self.torch
        start = time.perf_counter()
        for _ in range(steps):
            self.opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(self.net(self.x), self.y)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - start


def worker_main(side_name: str, conv_impl: str) -> None:
    """Answers one JSON command per stdin line: setup, run, quit."""
    side = TorchSide() if side_name == "torch" else JaxSide(side_name, conv_impl)
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "setup":
            reply = side.setup(command["model"], command["batch"])
        elif command["cmd"] == "run":
            reply = {"seconds": side.run(command["steps"])}
        else:
            return
        print(json.dumps(reply), flush=True)


# ----------------------------------------------------------------------------- driver


class Worker:
    """One side's process; ``call`` sends a command and waits for its reply."""

    def __init__(self, side: str, conv_impl: str, xla_flags: str):
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (ROOT, env.get("PYTHONPATH"))))
        if side == "jit":  # one device, XLA's multi-threaded runtime, convjax's CPU flags
            sys.path.insert(0, ROOT)
            from convjax.host_devices import conv_library_flags

            env["XLA_FLAGS"] = " ".join(conv_library_flags())
        args = [sys.executable, os.path.abspath(__file__), f"--worker={side}",
                f"--conv_impl={conv_impl}", f"--xla_flags={xla_flags}"]
        self.side = side
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)

    def call(self, **command) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.side} worker exited (rc={self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.flush()
        self.proc.wait()


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def measure(model: str, batch: int, sides, args) -> dict:
    """Interleaved rounds of every side on one model: images/s per round per side."""
    workers = [Worker(side, args.conv_impl, args.xla_flags) for side in sides]
    try:
        info = {w.side: w.call(cmd="setup", model=model, batch=batch) for w in workers}
        counts = {side: i["params"] for side, i in info.items()}
        if len(set(counts.values())) != 1:
            raise AssertionError(f"{model}: parameter counts differ: {counts}")
        steps = {}
        for w in workers:  # calibrate: one more step, then steps per round
            seconds = w.call(cmd="run", steps=1)["seconds"]
            steps[w.side] = max(1, math.ceil(args.round_s / seconds))
        rates = {w.side: [] for w in workers}
        for r in range(args.rounds):
            for w in workers[r % len(workers):] + workers[: r % len(workers)]:
                seconds = w.call(cmd="run", steps=steps[w.side])["seconds"]
                rates[w.side].append(steps[w.side] * batch / seconds)
    finally:
        for w in workers:
            w.close()
    return {"info": info, "rates": rates, "steps": steps}


def format_rate(values) -> str:
    return f"{statistics.median(values):,.1f} ({min(values):,.1f}–{max(values):,.1f})"


def print_table(results, sides) -> None:
    jax_sides = [s for s in sides if s != "torch"]
    header = ["model", "batch", "params"] + [f"{s} img/s" for s in sides]
    header += [f"{s} compile s" for s in jax_sides]
    if "torch" in sides and jax_sides:
        header.append("ratio")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for (model, batch), result in results.items():
        rates, info = result["rates"], result["info"]
        row = [model, str(batch), f"{next(iter(info.values()))['params']:,}"]
        row += [format_rate(rates[s]) for s in sides]
        row += [f"{info[s]['compile_s']:.1f}" for s in jax_sides]
        if "torch" in sides and jax_sides:
            best = max(statistics.median(rates[s]) for s in jax_sides)
            row.append(f"{best / statistics.median(rates['torch']):.2f}")
        print("| " + " | ".join(row) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="LeNet-5, ResNet-18-CIFAR, ResNet-50 b8; shard_map vs torch; 3 rounds")
    parser.add_argument("--models", default=None, help="comma list of model:batch")
    parser.add_argument("--sides", default=None, help=f"comma list of {', '.join(SIDES)}")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--round_s", type=float, default=None, help="seconds per side per round")
    parser.add_argument("--conv_impl", default="auto", help="convjax models' conv_impl")
    parser.add_argument("--xla_flags", default="", help="extra XLA_FLAGS for the JAX sides")
    parser.add_argument("--json", default=None, help="also write every round's figures here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.conv_impl)
        return
    cases = (args.models.split(",") if args.models else QUICK if args.quick else FULL)
    sides = args.sides.split(",") if args.sides else (
        ["shard_map", "torch"] if args.quick else list(SIDES))
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.round_s = args.round_s or (1.5 if args.quick else 3.0)
    for side in sides:
        if side not in SIDES:
            parser.error(f"unknown side {side!r}; valid: {', '.join(SIDES)}")
    print(f"{os.cpu_count()} cores | conv_impl={args.conv_impl} | extra XLA flags "
          f"{args.xla_flags or 'none'} | rounds {args.rounds} x "
          f"~{args.round_s:g} s per side | load average {load()}", flush=True)
    results = {}
    for case in cases:
        model, _, batch = case.partition(":")
        if model not in MODELS:
            parser.error(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
        results[(model, int(batch))] = measure(model, int(batch), sides, args)
        print(f"  {case}: " + ", ".join(
            f"{s} {format_rate(v)}" for s, v in results[(model, int(batch))]["rates"].items()
        ) + f" | load {load()}", flush=True)
    print(f"\nload average at the end: {load()}\n")
    print_table(results, sides)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{m}:{b}": r for (m, b), r in results.items()}, f, indent=1)


def _set_worker_flags(argv: list[str]) -> None:
    """Before JAX starts: one device per core for shard_map, then any extra XLA flags."""
    extra = next((a.split("=", 1)[1] for a in argv if a.startswith("--xla_flags=")), "")
    if "--worker=shard_map" in argv:
        sys.path.insert(0, ROOT)
        from convjax.host_devices import use_all_cpu_cores

        use_all_cpu_cores()
    if extra and any(a.startswith("--worker=") for a in argv):
        os.environ["XLA_FLAGS"] = " ".join(filter(None, (os.environ.get("XLA_FLAGS"), extra)))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    _set_worker_flags(sys.argv)
    main()
