"""Compile time and train-step throughput of the classic architectures.

    python benchmarks/models.py                       # LeNet-5, ResNet-18-CIFAR, VGG-16, ResNet-50
    python benchmarks/models.py --models resnet50 --batch 64 --dtype bfloat16 --steps 20

For each model: the time to trace + compile one training step (forward, backward,
SGD-momentum update, BatchNorm statistics; jitted, parameters donated), then the
mean time of ``--steps`` steps after a warm-up step, as milliseconds per step and
images per second. The step is the one the generic train step runs on one device
(cross-entropy, ``jax.value_and_grad``, optax update), written out here so this
script needs only JAX, Flax and optax (it runs on machines without TensorFlow).
Inputs are random: throughput does not depend on the pixels.
"""

from __future__ import annotations

import argparse
import os
import time

from convjax.host_devices import conv_library_flags

# The convolution library a training run uses on CPU hosts (XLA_FLAGS set by the user win).
os.environ.setdefault("XLA_FLAGS", " ".join(conv_library_flags()))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from convjax.models import get_model  # noqa: E402

# name -> (registry name, input [H, W, C], classes, CPU batch)
MODELS = {
    "lenet5": ("lenet5", (32, 32, 1), 10, 128),
    "resnet18_cifar": ("resnet18_cifar", (32, 32, 3), 10, 32),
    "vgg16": ("vgg16", (224, 224, 3), 1000, 4),
    "resnet50": ("resnet50", (224, 224, 3), 1000, 8),
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def make_train_step(model, tx):
    """(params, model_state, opt_state, x, y, rng) -> same + loss, jitted with donation."""

    def loss_fn(params, model_state, x, y, rng):
        logits, new_state = model.apply(
            {"params": params, **model_state},
            x,
            train=True,
            mutable=list(model_state),
            rngs={"dropout": rng},
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, new_state

    def step(params, model_state, opt_state, x, y, rng):
        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, model_state, x, y, rng
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1, 2))


def benchmark(name: str, batch: int, steps: int, dtype) -> dict[str, float]:
    registry_name, shape, classes, _ = MODELS.get(name, (name, (224, 224, 3), 1000, 8))
    model = get_model(registry_name, num_classes=classes, dtype=dtype)
    x = jax.random.uniform(jax.random.key(0), (batch, *shape))
    y = jax.random.randint(jax.random.key(1), (batch,), 0, classes)
    variables = jax.jit(model.init)(jax.random.key(2), x[:1])
    params = variables.pop("params")
    model_state = dict(variables)
    num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    tx = optax.sgd(0.01, momentum=0.9)
    opt_state = tx.init(params)
    step = make_train_step(model, tx)
    rng = jax.random.key(3)

    start = time.perf_counter()
    compiled = step.lower(params, model_state, opt_state, x, y, rng).compile()
    compile_s = time.perf_counter() - start

    state = compiled(params, model_state, opt_state, x, y, rng)  # warm-up
    # Made before the clock starts: the first fold_in compiles, which took longer than
    # a whole LeNet-5 step.
    step_rngs = jax.block_until_ready([jax.random.fold_in(rng, i) for i in range(steps)])
    jax.block_until_ready(state)
    start = time.perf_counter()
    for step_rng in step_rngs:
        params, model_state, opt_state, loss = state[:4]
        state = compiled(params, model_state, opt_state, x, y, step_rng)
    jax.block_until_ready(state)
    step_s = (time.perf_counter() - start) / steps
    if not np.isfinite(float(state[3])):
        raise FloatingPointError(f"{name}: non-finite loss")
    return {
        "params": num_params,
        "compile_s": compile_s,
        "step_ms": step_s * 1e3,
        "images_per_s": batch / step_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch", type=int, default=None, help="default: per model, CPU-sized")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    args = parser.parse_args()
    device = jax.devices()[0]
    print(
        f"JAX {jax.__version__} on {len(jax.devices())} x {device.device_kind} "
        f"({device.platform}); dtype {args.dtype}; one device, jitted step"
    )
    header = f"{'model':<16}{'params':>13}{'input':>15}{'batch':>7}{'compile s':>11}"
    print(header + f"{'step ms':>11}{'images/s':>11}")
    for name in args.models.split(","):
        batch = args.batch or MODELS.get(name, (None, None, None, 8))[3]
        shape = MODELS.get(name, (name, (224, 224, 3)))[1]
        r = benchmark(name, batch, args.steps, DTYPES[args.dtype])
        print(
            f"{name:<16}{r['params']:>13,}{'x'.join(map(str, shape)):>15}{batch:>7}"
            f"{r['compile_s']:>11.1f}{r['step_ms']:>11.1f}{r['images_per_s']:>11.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
