"""Training a new head on a frozen backbone: full forward passes vs features once.

    python benchmarks/features_once.py [--model resnet18] [--size 32] [--epochs 3]

Both modes train the same 10-class head of ``--model`` on the bundled digits
(1,437 training images, resized to ``--size`` and repeated to 3 channels) with the
generic train step, one jitted ``lax.scan`` per epoch:

- full: every step runs the frozen backbone forward (``TransferTask`` with
  ``freeze=[BACKBONE]``: no gradient flows into it, BatchNorm uses running stats);
- features once: the head's inputs are computed a single time
  (``compute_head_inputs``), then ``fit_head`` trains the head on them.

Prints the mean time per epoch of each (after a compile/warm-up epoch), the
one-off extraction time, and the speedups per epoch and over ``--epochs`` epochs.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

from convjax.evals.linear_probe import make_epoch_fn
from convjax.models import get_model
from convjax.models.transfer import BACKBONE, LinearHead, compute_head_inputs
from convjax.tasks import get_task
from convjax.tasks.transfer import TransferTask
from convjax.train.optimizers import make_optimizer
from convjax.train.state import TrainState
from convjax.train.step import make_train_step

OPTIMIZER = {"name": "adam", "learning_rate": 1e-3}


def digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    images = jnp.asarray(data.images[:1437, :, :, None] / 16.0, jnp.float32)
    images = jax.image.resize(images, (len(images), size, size, 1), "bilinear")
    return np.repeat(np.asarray(images), 3, axis=-1), data.target[:1437].astype(np.int32)


def time_epochs(epoch, state, data, epochs: int) -> tuple[float, object]:
    state, metrics = epoch(state, data, jax.random.key(0))  # compile + warm-up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for e in range(epochs):
        state, metrics = epoch(state, data, jax.random.key(e + 1))
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / epochs, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    images, labels = digits(args.size)
    model = get_model(args.model, num_classes=10)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.asarray(images[:1]))
    variables = dict(variables)
    params = variables.pop("params")
    steps = args.epochs * (len(images) // args.batch)
    print(
        f"{args.model} on {len(images)} digits at {args.size}x{args.size}x3, batch "
        f"{args.batch}, {jax.devices()[0].device_kind}"
    )

    task = TransferTask(get_task("classification"), freeze=(BACKBONE,))
    state = TrainState.create(
        params=params,
        model_state=variables,
        tx=task.make_optimizer(OPTIMIZER, steps, make_optimizer),
        rng=jax.random.PRNGKey(0),
    )
    epoch = make_epoch_fn(make_train_step(task.loss_fn(model)), len(images), args.batch)
    data = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
    full_s, metrics = time_epochs(epoch, state, data, args.epochs)
    print(f"full forward passes: {full_s:.3f} s/epoch (loss {float(metrics['loss']):.3f})")

    start = time.perf_counter()
    features = compute_head_inputs(
        model, {"params": params, **variables}, images, batch_size=args.batch * 4
    )
    extract_s = time.perf_counter() - start
    head = LinearHead(10)
    head_state = TrainState.create(
        params=head.init(jax.random.key(0), jnp.asarray(features[:1]))["params"],
        tx=make_optimizer(OPTIMIZER, steps),
        rng=jax.random.PRNGKey(0),
    )
    head_epoch = make_epoch_fn(
        make_train_step(get_task("classification").loss_fn(head)), len(images), args.batch
    )
    head_data = {"image": jnp.asarray(features), "label": jnp.asarray(labels)}
    head_s, metrics = time_epochs(head_epoch, head_state, head_data, args.epochs)
    print(
        f"features once: extraction {extract_s:.3f} s once (compile included), then "
        f"{head_s * 1e3:.2f} ms/epoch (loss {float(metrics['loss']):.3f})"
    )
    total_full = args.epochs * full_s
    total_once = extract_s + args.epochs * head_s
    print(
        f"speedup per epoch: {full_s / head_s:.0f}x; over {args.epochs} epochs including "
        f"the extraction: {total_full / total_once:.1f}x"
    )


if __name__ == "__main__":
    main()
