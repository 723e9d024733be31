r"""Cost of mining the top 9 of every unit of every conv layer, against a plain forward pass.

One mining step = the model's forward to every convolution tap (VGG-16: 13 layers, 4,224
units) plus, for every unit, the maximum over each image's positions and the merge
into the running top-9 (:mod:`convjax.viz.mining`), on device. The plain forward is
``model.apply(variables, images)`` (logits). Both are jitted and timed on the same
batches, interleaved; the figure is the median of the per-batch times. Memory: the
state is ``[units, k]`` x 4 arrays whatever the number of images, and XLA's memory
analysis of the compiled step (temporaries, arguments) does not depend on it either;
the script also mines twice as many images and reports the peak RSS of both runs.

  python benchmarks/visualize.py [--model vgg16] [--size 224] [--batch 8] [--batches 4]

Weights are random (speed does not depend on them). Timings on a shared machine are
noisy; run it when the machine is idle.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from convjax.analysis.plan import conv_layers
from convjax.models import get_model
from convjax.models.taps import extract_features, list_layers
from convjax.viz import mining


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def temp_mib(compiled) -> float:
    analysis = compiled.memory_analysis()
    return getattr(analysis, "temp_size_in_bytes", 0) / 2**20 if analysis else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--k", type=int, default=9)
    args = parser.parse_args()

    model = get_model(args.model)
    shape = (args.batch, args.size, args.size, 3)
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    variables = jax.jit(lambda r, x: model.init(r, x, train=False))(jax.random.key(0), x[:1])
    layers = conv_layers(model, shape)
    shapes = dict(list_layers(model, shape))
    state = mining.empty_state({name: shapes[name] for name in layers}, args.k)
    units = sum(int(shapes[name].shape[-1]) for name in layers)

    forward = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, x).compile()
    step_fn = mining.make_mining_step(lambda v, x: extract_features(model, v, x, layers))
    batch = {"image": x, "index": jnp.arange(args.batch), "mask": jnp.ones(args.batch)}
    mine = jax.jit(step_fn).lower(state, variables, batch).compile()

    jax.block_until_ready(forward(variables, x))
    state = jax.block_until_ready(mine(state, variables, batch))
    rss_first = peak_rss_mib()
    plain, mined = [], []
    for i in range(args.batches):
        start = time.perf_counter()
        jax.block_until_ready(forward(variables, x))
        plain.append(time.perf_counter() - start)
        batch["index"] = jnp.arange(args.batch) + (i + 1) * args.batch
        start = time.perf_counter()
        state = jax.block_until_ready(mine(state, variables, batch))
        mined.append(time.perf_counter() - start)
    for i in range(args.batches):  # as many images again: memory must not grow
        batch["index"] = jnp.arange(args.batch) + (args.batches + 1 + i) * args.batch
        state = jax.block_until_ready(mine(state, variables, batch))
    rss_last = peak_rss_mib()

    per_plain, per_mined = statistics.median(plain), statistics.median(mined)
    state_kib = sum(a.nbytes for topk in state.values() for a in topk) / 1024
    print(
        f"{args.model} {args.size}x{args.size}, batch {args.batch}, {len(layers)} conv layers, "
        f"{units} units, top {args.k}; {jax.devices()[0].platform}, jax {jax.__version__}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"plain forward : {per_plain * 1e3 / args.batch:8.1f} ms/image (median of {args.batches})"
    )
    print(f"forward + mine: {per_mined * 1e3 / args.batch:8.1f} ms/image")
    print(f"ratio         : {per_mined / per_plain:8.3f}")
    print(
        f"state {state_kib:.0f} KiB; XLA temporaries: forward {temp_mib(forward):.0f} MiB, "
        f"mining step {temp_mib(mine):.0f} MiB"
    )
    print(
        f"peak RSS after {(args.batches + 1) * args.batch} images {rss_first:.0f} MiB -> "
        f"after {(2 * args.batches + 1) * args.batch} images {rss_last:.0f} MiB"
    )


if __name__ == "__main__":
    main()
