"""Times convjax.ops fast paths against their sliding-window references (CPU).

    python benchmarks/conv_ops.py

Prints milliseconds per call (median of repeats, after compiling) and the speed-up.
"""

from __future__ import annotations

import time

import jax
import numpy as np
import skimage.data
from timing import median_ms

from convjax.ops import (
    conv2d,
    conv2d_reference,
    edge_detect,
    filter_bank,
    max_pool,
    max_pool_reference,
)


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 32, 32, 16)).astype(np.float32)
    w = rng.normal(size=(3, 3, 16, 32)).astype(np.float32)
    camera = skimage.data.camera()
    cases = [
        (
            "conv2d [8,32,32,16] * [3,3,16,32] same",
            lambda: conv2d(x, w, padding="same"),
            lambda: conv2d_reference(x, w, padding="same"),
        ),
        (
            "max_pool [8,32,32,16] 2x2 s2",
            lambda: max_pool(x, 2),
            lambda: max_pool_reference(x, 2),
        ),
    ]
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}")
    print(f"{'op':45s} {'fast ms':>9s} {'reference ms':>13s} {'speed-up':>9s}")
    for name, fast, reference in cases:
        compile_start = time.perf_counter()
        jax.block_until_ready(fast())
        compile_ms = 1e3 * (time.perf_counter() - compile_start)
        fast_ms = median_ms(fast, 50)
        reference_ms = median_ms(reference, 3)
        print(
            f"{name:45s} {fast_ms:9.3f} {reference_ms:13.1f} {reference_ms / fast_ms:8.0f}x"
            f"   (first call incl. compile {compile_ms:.0f} ms)"
        )

    # One input channel: XLA:CPU's convolution vs the fused stencil conv2d picks there.
    gray = jax.numpy.asarray(camera, jax.numpy.float32)[None, :, :, None]
    sobel = filter_bank(["sobel_x", "sobel_y"])
    print(f"\n{'C_in = 1: camera [1,512,512,1] * [3,3,1,2] same':50s} {'ms':>8s}")
    for impl in ("xla", "stencil"):
        run = lambda impl=impl: conv2d(gray, sobel, padding="same", impl=impl)
        jax.block_until_ready(run())
        print(f"{'  conv2d impl=' + impl:50s} {median_ms(run, 30):8.3f}")
    jax.block_until_ready(edge_detect(camera))
    edge_ms = median_ms(lambda: edge_detect(camera), 30)
    print(f"{'  edge_detect(camera), sobel magnitude':50s} {edge_ms:8.3f}")


if __name__ == "__main__":
    main()
