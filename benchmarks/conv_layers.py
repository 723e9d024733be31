r"""Where a train step's convolution time goes: each layer's forward, input gradient and
weight gradient in convjax and in PyTorch on this machine's CPUs, summed per step.

    python benchmarks/conv_layers.py --model=resnet50 --batch=8
    python benchmarks/conv_layers.py --model=resnet18_cifar --batch=128

The layers are read from the zoo model (every ``Conv`` call while the model is traced,
identical layers counted once with their multiplicity). convjax runs the model's own
convolution (``conv_impl='auto'``, jitted, XLA's threads); PyTorch runs ``conv2d`` and
``aten.convolution_backward`` (channels-last, its default threads), each direction on
its own. The first layer's input gradient is left out on both sides: training never
computes it. Models: those of ``vs_pytorch.py``.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from convjax.host_devices import conv_library_flags  # noqa: E402

os.environ.setdefault("XLA_FLAGS", " ".join(conv_library_flags()))  # as a jit run sets

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from convjax.models import get_model  # noqa: E402
from convjax.models.layers import Conv, conv_function, resolve_conv_impl  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import median_ms  # noqa: E402
from vs_pytorch import MODELS  # noqa: E402

# (input [B, H, W, C], kernel (f_h, f_w), C_out, strides, padding, groups)
Layer = tuple


def _pair(value) -> tuple:
    return (value, value) if isinstance(value, int) else tuple(value)


def conv_layers(model_name: str, batch: int) -> tuple[collections.Counter, Layer]:
    """The model's distinct convolutions with their counts, and the first one."""
    name, kwargs, image_shape, _ = MODELS[model_name]
    model = get_model(name, **kwargs)
    seen: dict[tuple, Layer] = {}  # module path -> layer (Conv.__call__ calls Flax's)

    def record(next_fun, args, call_kwargs, context):
        module = context.module
        if (
            isinstance(module, Conv)
            and context.method_name == "__call__"
            and module.path not in seen
        ):
            x, kernel = args[0], _pair(module.kernel_size)
            strides = _pair(module.strides or 1)
            padding = module.padding
            if isinstance(padding, str):
                pads = tuple(lax.padtype_to_pads(x.shape[1:3], kernel, strides, padding))
            else:
                pads = tuple(_pair(p) for p in _pair(padding))
            layer = (tuple(x.shape), kernel, module.features, strides, pads)
            seen[module.path] = (*layer, module.feature_group_count)
        return next_fun(*args, **call_kwargs)

    images = jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32)
    with nn.intercept_methods(record):
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
    layers = list(seen.values())
    return collections.Counter(layers), layers[0]


def time_convjax(layer: Layer, repeats: int) -> dict[str, float]:
    x_shape, kernel, c_out, strides, pads, groups = layer
    conv = conv_function(resolve_conv_impl("auto"))
    rs = np.random.RandomState(0)
    x = jnp.asarray(rs.standard_normal(x_shape), jnp.float32)
    w_shape = (*kernel, x_shape[-1] // groups, c_out)
    w = jnp.asarray(rs.standard_normal(w_shape) * 0.1, jnp.float32)

    def forward(x, w):
        dims = ("NHWC", "HWIO", "NHWC")
        return conv(x, w, strides, pads, dimension_numbers=dims, feature_group_count=groups)

    dy = jnp.asarray(rs.standard_normal(jax.eval_shape(forward, x, w).shape), jnp.float32)
    fwd = jax.jit(forward)
    dx = jax.jit(lambda x, w, dy: jax.vjp(lambda v: forward(v, w), x)[1](dy)[0])
    dw = jax.jit(lambda x, w, dy: jax.vjp(lambda k: forward(x, k), w)[1](dy)[0])
    return {
        "fwd": median_ms(lambda: fwd(x, w), repeats, warmup=1),
        "dx": median_ms(lambda: dx(x, w, dy), repeats, warmup=1),
        "dw": median_ms(lambda: dw(x, w, dy), repeats, warmup=1),
    }


def time_torch(layer: Layer, repeats: int) -> dict[str, float]:
    import torch

    (b, h, w_, c), kernel, c_out, strides, pads, groups = layer
    channels_last = torch.channels_last
    x = torch.randn(b, c, h, w_).to(memory_format=channels_last)
    w = (torch.randn(c_out, c // groups, *kernel) * 0.1).to(memory_format=channels_last)
    # PyTorch pads symmetrically: pad the input where convjax's padding is not.
    (top, bottom), (left, right) = pads
    if top != bottom or left != right:
        x = torch.nn.functional.pad(x, (left, right, top, bottom)).contiguous(
            memory_format=channels_last
        )
        padding = [0, 0]
    else:
        padding = [top, left]
    conv_args = (list(strides), padding, [1, 1], False, [0, 0], groups)
    y = torch.nn.functional.conv2d(x, w, None, strides, padding, 1, groups)
    dy = torch.randn_like(y)

    def backward(mask):
        return torch.ops.aten.convolution_backward(dy, x, w, None, *conv_args, mask)

    with torch.no_grad():
        return {
            "fwd": median_ms(
                lambda: torch.nn.functional.conv2d(x, w, None, strides, padding, 1, groups),
                repeats,
                warmup=1,
            ),
            "dx": median_ms(lambda: backward([True, False, False]), repeats, warmup=1),
            "dw": median_ms(lambda: backward([False, True, False]), repeats, warmup=1),
        }


def describe(layer: Layer) -> str:
    (b, h, w, c), kernel, c_out, strides, _, groups = layer
    text = f"{h}x{w}x{c}->{c_out} {kernel[0]}x{kernel[1]}/{strides[0]}"
    return text + (f" g{groups}" if groups > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50", choices=sorted(MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    layers, first = conv_layers(args.model, args.batch)
    print(
        f"{args.model} batch {args.batch} | {len(layers)} distinct of {sum(layers.values())} "
        f"convolutions | ms per call, median of {args.repeats} | load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(f"{'layer':<28}{'n':>3}  {'convjax fwd / dx / dw':>24}  {'torch fwd / dx / dw':>24}")
    totals = collections.defaultdict(float)
    for layer, count in sorted(layers.items(), key=lambda kv: -kv[0][0][1]):
        ours, theirs = time_convjax(layer, args.repeats), time_torch(layer, args.repeats)
        for side, times in (("convjax", ours), ("torch", theirs)):
            for direction, ms in times.items():
                if not (direction == "dx" and layer == first):
                    totals[(side, direction)] += count * ms
        row = " / ".join(f"{ours[d]:6.2f}" for d in ("fwd", "dx", "dw"))
        twin = " / ".join(f"{theirs[d]:6.2f}" for d in ("fwd", "dx", "dw"))
        print(f"{describe(layer):<28}{count:>3}  {row:>24}  {twin:>24}", flush=True)
    print("\nper step (ms; the first layer's dx left out):")
    for direction in ("fwd", "dx", "dw"):
        ours, theirs = totals[("convjax", direction)], totals[("torch", direction)]
        print(
            f"  {direction:<4} convjax {ours:8.1f}  torch {theirs:8.1f}  ratio {theirs / ours:.2f}"
        )
    ours = sum(v for (side, _), v in totals.items() if side == "convjax")
    theirs = sum(v for (side, _), v in totals.items() if side == "torch")
    print(f"  all  convjax {ours:8.1f}  torch {theirs:8.1f}  ratio {theirs / ours:.2f}")


if __name__ == "__main__":
    main()
