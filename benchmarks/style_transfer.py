r"""Seconds per style-transfer iteration at 256x256 with VGG-19, JAX vs PyTorch CPU.

One iteration = forward of the generated image through VGG-19 up to relu5_1, the
content cost at relu4_2, Gram style costs at relu1_1..relu5_1 (TV weight 0), the gradient
with respect to the image, an Adam update and the [0, 1] projection. The JAX side
is the project's generic train step (``jit`` strategy, one device); the PyTorch
side is the same computation written with ``torch.nn`` (run only when torch is
installed: ``pip install torch==2.13.0``). Weights are random: speed does not
depend on them.

  python benchmarks/style_transfer.py [--size 256] [--iters 4] [--rounds 3] [--arch vgg19]

Timings on a shared machine are noisy; run it when the machine is idle.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from convjax.models.features import IMAGENET_MEAN, IMAGENET_STD, build_feature_net
from convjax.runs import images
from convjax.tasks.style import StyleTransferTask, build_batch
from convjax.train.optimizers import make_optimizer
from convjax.train.parallel import JitStrategy
from convjax.train.state import TrainState

STAGES = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)


def jax_runner(task, content, style, arch: str) -> tuple[float, Callable[[int], float]]:
    """(compile + first step seconds, ``run(n)`` -> seconds per step over n steps) of
    the generic train step."""
    net = build_feature_net(task.layers, arch=arch, pool="avg")
    batch = build_batch(net, task, content[None], [style], np.ones(1, np.float32), False)
    strategy = JitStrategy()
    tx = task.make_optimizer({"name": "adam", "learning_rate": 0.02}, 1000, make_optimizer)
    state = TrainState.create(
        params={"image": jnp.asarray(content[None])},
        tx=tx,
        rng=jax.random.key_data(jax.random.key(0)),
    )
    state = strategy.put_state(jax.tree.map(np.array, state))
    device_batch = strategy.put_batch(batch)
    step = strategy.compile_train_step(task.loss_fn(net))
    start = time.perf_counter()
    state, metrics = step(state, device_batch)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - start
    holder = [state]

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            holder[0], metrics = step(holder[0], device_batch)
            jax.block_until_ready(metrics)  # one step in flight, as a training loop
        return (time.perf_counter() - start) / n

    return first, run


def torch_runner(task, content, style, arch: str) -> Callable[[int], float] | None:
    """``run(n)`` -> seconds per iteration of the same computation in PyTorch CPU, or
    None when torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    layers, names, c_in = [], {}, 3
    for stage, (size, width) in enumerate(zip(STAGES[arch], WIDTHS, strict=True), 1):
        for i in range(1, size + 1):
            layers += [torch.nn.Conv2d(c_in, width, 3, padding=1), torch.nn.ReLU()]
            names[f"relu{stage}_{i}"] = len(layers) - 1
            c_in = width
        layers.append(torch.nn.AvgPool2d(2, 2))
    deepest = max(names[layer] for layer in task.layers)
    net = torch.nn.Sequential(*layers[: deepest + 1]).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def to_torch(x):
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].float()

    def taps(x):
        out, h = {}, (x - mean) / std
        for i, module in enumerate(net):
            h = module(h)
            for name, index in names.items():
                if index == i and name in task.layers:
                    out[name] = h
        return out

    def gram(a):
        _, c, h, w = a.shape
        f = a.reshape(c, h * w)
        return f @ f.t()

    with torch.no_grad():
        content_feats = taps(to_torch(content))
        style_feats = taps(to_torch(style))
        targets = {k: gram(style_feats[k]) for k in task.style_layers}
    image = to_torch(content).clone().requires_grad_(True)
    opt = torch.optim.Adam([image], lr=0.02)

    def iteration():
        opt.zero_grad()
        feats = taps(image)
        j_content = 0.0
        for layer, lam in task.content_layers.items():
            _, c, h, w = feats[layer].shape
            diff = content_feats[layer] - feats[layer]
            j_content = j_content + lam * diff.pow(2).sum() / (4 * h * w * c)
        j_style = 0.0
        for layer, lam in task.style_layers.items():
            _, c, h, w = feats[layer].shape
            diff = targets[layer] - gram(feats[layer])
            j_style = j_style + lam * diff.pow(2).sum() / (2 * h * w * c) ** 2
        loss = task.content_weight * j_content + task.style_weight * j_style
        loss.backward()
        opt.step()
        with torch.no_grad():
            image.clamp_(0.0, 1.0)

    iteration()

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            iteration()
        return (time.perf_counter() - start) / n

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iters", type=int, default=4, help="iterations per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating JAX/PyTorch rounds")
    parser.add_argument("--arch", choices=sorted(STAGES), default="vgg19")
    args = parser.parse_args()
    task = StyleTransferTask()  # course normalisation, relu4_2 content, relu1_1..relu5_1 style
    content = images.load_image("skimage:chelsea", (args.size, args.size))
    style = images.load_image("skimage:immunohistochemistry", (args.size, args.size))
    cores = os.cpu_count()
    print(f"{args.arch} {args.size}x{args.size}, {cores} CPU core(s), jax {jax.__version__}")
    first, run_jax = jax_runner(task, content, style, args.arch)
    print(f"jax: compile + first step {first:.1f} s")
    run_torch = torch_runner(task, content, style, args.arch)
    # Alternate rounds so both see the same background load on a shared machine.
    jax_s, torch_s = [], []
    for _ in range(args.rounds):
        jax_s.append(run_jax(args.iters))
        if run_torch is not None:
            torch_s.append(run_torch(args.iters))
    print(
        f"jax (generic train step, jit, 1 device): {np.median(jax_s):.3f} s/iter "
        f"(rounds: {', '.join(f'{t:.2f}' for t in jax_s)})"
    )
    if run_torch is None:
        print("pytorch: not installed (pip install torch==2.13.0)")
        return
    import torch

    threads = torch.get_num_threads()
    print(
        f"pytorch {torch.__version__} CPU ({threads} threads): {np.median(torch_s):.3f} s/iter "
        f"(rounds: {', '.join(f'{t:.2f}' for t in torch_s)})"
    )
    ratio = np.median(torch_s) / np.median(jax_s)
    print(f"ratio pytorch/jax: {ratio:.2f} (>1 means JAX is faster)")


if __name__ == "__main__":
    main()
