"""Jitted NMS (convjax.ops.nms) vs torchvision.ops.nms on this CPU.

    python benchmarks/nms.py [--n 10000] [--repeats 20]

torchvision is optional: install it beside the project (see docs/detection.md) and put
it on PYTHONPATH; without it only the convjax figures are printed. Each figure is the
median wall time of ``--repeats`` calls after a warm-up; "1st call s" is the warm-up
call, which includes the compile for a new shape. Both run with the threads they choose
by default; ``--threads 1`` gives single-thread figures (it sets torch's thread count
and XLA's CPU flags).
"""

from __future__ import annotations

import argparse
import os
import time


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="boxes per call")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=0, help="0 = library defaults")
    return parser.parse_args()


def make_boxes(kind: str, n: int, seed: int = 0):
    """Random boxes over a 1000x1000 image, or boxes clustered around 50 objects."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if kind == "random":
        xy = rng.random((n, 2)) * 1000
        wh = rng.random((n, 2)) * 100 + 1
    else:
        centres = rng.random((50, 2)) * 1000
        xy = centres[rng.integers(0, 50, n)] + rng.normal(size=(n, 2)) * 10
        wh = 60 + rng.normal(size=(n, 2)) * 5
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    return boxes, rng.random(n).astype(np.float32)


def main() -> None:
    args = _parse()
    if args.threads:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
        )
    import jax
    import jax.numpy as jnp
    import numpy as np
    from timing import median_ms

    from convjax.ops.nms import nms

    try:
        import torch
        import torchvision

        if args.threads:
            torch.set_num_threads(args.threads)
    except ImportError:
        torch = torchvision = None
        print("torchvision not importable: printing convjax figures only")

    print(f"NMS of {args.n} boxes, IoU threshold {args.iou}, median of {args.repeats} calls")
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}"
        + (f"; torch {torch.__version__}, torchvision {torchvision.__version__}" if torch else "")
    )
    print(
        f"{'boxes':<10} {'kept':>6} {'convjax ms':>11} {'1st call s':>10} {'torchvision ms':>15} "
        f"{'same set+order':>15}"
    )
    for kind in ("random", "clustered"):
        boxes_np, scores_np = make_boxes(kind, args.n)
        boxes, scores = jnp.asarray(boxes_np), jnp.asarray(scores_np)
        start = time.perf_counter()
        result = jax.block_until_ready(nms(boxes, scores, args.iou))
        compile_s = time.perf_counter() - start
        ours_ms = median_ms(
            lambda b=boxes, s=scores: jax.block_until_ready(nms(b, s, args.iou)), args.repeats
        )
        kept = np.asarray(result.indices[: int(result.count)])
        tv_ms, same = float("nan"), "n/a"
        if torchvision is not None:
            tb, ts = torch.from_numpy(boxes_np), torch.from_numpy(scores_np)
            reference = torchvision.ops.nms(tb, ts, args.iou).numpy()
            tv_ms = median_ms(lambda b=tb, s=ts: torchvision.ops.nms(b, s, args.iou), args.repeats)
            same = str(np.array_equal(reference, kept))
        print(
            f"{kind:<10} {len(kept):>6} {ours_ms:>11.2f} {compile_s:>10.2f} {tv_ms:>15.2f} "
            f"{same:>15}"
        )


if __name__ == "__main__":
    main()
