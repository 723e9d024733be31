"""What a style-transfer run starts from: blend weights, the scale pyramid, start images.

Pure numpy; images are float32 ``[N, H, W, C]`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

INITS = ("content", "noise", "mix")


def blend_weights(weights: str | Sequence[float] | None, num_styles: int) -> np.ndarray:
    """Normalised blend weights [S] for ``num_styles`` styles (equal when not given).

    ``weights``: ``'0.7,0.3'``, a sequence of numbers, or ``None`` / ``''``.
    """
    if weights is None or (isinstance(weights, str) and not weights.strip()):
        values = np.ones(num_styles)
    elif isinstance(weights, str):
        values = np.array([float(w) for w in weights.split(",")])
    else:
        values = np.asarray(weights, np.float64)
    if values.shape != (num_styles,) or np.any(values < 0) or values.sum() <= 0:
        raise ValueError(
            f"style_blend_weights must be {num_styles} non-negative number(s), one per style "
            f"image, not all zero; got {weights!r}"
        )
    return (values / values.sum()).astype(np.float32)


def scale_sizes(shape: Sequence[int], num_scales: int, min_size: int = 1) -> list[tuple[int, int]]:
    """Coarse-to-fine (H, W) sizes, halving from ``shape`` for each extra scale.

    Raises ``ValueError`` when the coarsest is below ``min_size`` (the smallest input
    the feature network accepts).
    """
    if num_scales < 1:
        raise ValueError(f"num_scales must be >= 1; got {num_scales}")
    h, w = int(shape[0]), int(shape[1])
    sizes = [
        (max(1, round(h / 2**k)), max(1, round(w / 2**k))) for k in reversed(range(num_scales))
    ]
    if min(sizes[0]) < min_size:
        raise ValueError(
            f"the coarsest scale {sizes[0]} is below the feature network's {min_size}x{min_size}; "
            f"use fewer scales than {num_scales} or a larger image_size than {max(h, w)}"
        )
    return sizes


def check_init(how: str) -> None:
    """Raises ``ValueError`` naming the valid starts unless ``how`` is one of :data:`INITS`."""
    if how not in INITS:
        raise ValueError(f"Unknown init {how!r}; valid: {', '.join(INITS)}")


def initial_images(content: np.ndarray, how: str, noise_ratio: float, seed: int) -> np.ndarray:
    """content: [N, H, W, C] -> the starting images: the content, uniform noise, or a mix
    ``(1 - noise_ratio) * content + noise_ratio * noise``."""
    check_init(how)
    noise = np.random.default_rng(seed).uniform(size=content.shape).astype(np.float32)
    if how == "content":
        return content.astype(np.float32)
    if how == "noise":
        return noise
    return ((1.0 - noise_ratio) * content + noise_ratio * noise).astype(np.float32)
