"""Pure image-array helpers: dtype and channel conversion, resizing (no files).

Images are numpy arrays ``[H, W, C]``; float images hold values in [0, 1] unless
said otherwise. File reading and writing live in :mod:`convjax.runs.images`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An image [H, W], [H, W, 1] or [H, W, 3] -> uint8 RGB [H, W, 3].

    uint8 input is kept; float input in [0, 1] is scaled by 255 and rounded; float
    input outside [0, 1] (a mean/std-normalised image) is first stretched from its
    min..max onto [0, 1]. One channel is repeated to three.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"to_uint8 expects an image [H, W, 1|3]; got shape {image.shape}")
    if image.dtype != np.uint8:
        image = image.astype(np.float32)
        lo, hi = float(image.min()), float(image.max())
        if lo < 0 or hi > 1:  # a normalised image: stretch to the full range
            image = (image - lo) / max(hi - lo, 1e-6)
        image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image


def to_rgb_float(image: np.ndarray) -> np.ndarray:
    """Any uint8/bool/float image [H, W] / [H, W, 1|3|4] -> float32 RGB [H, W, 3] in [0, 1].

    Integers are divided by their dtype's maximum, alpha is dropped, one channel is
    repeated to three, and values are clipped to [0, 1].
    """
    image = np.asarray(image)
    if image.dtype == np.bool_:
        image = image.astype(np.float32)
    elif np.issubdtype(image.dtype, np.integer):
        image = image.astype(np.float32) / np.iinfo(image.dtype).max
    image = image.astype(np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an image [H, W], [H, W, 1|3|4]; got shape {image.shape}")
    if image.shape[-1] == 4:
        image = image[..., :3]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.clip(image, 0.0, 1.0)


def fit_size(shape: Sequence[int], max_side: int) -> tuple[int, int]:
    """(H, W) of ``shape`` scaled so the longer side is ``max_side``, aspect kept."""
    h, w = int(shape[0]), int(shape[1])
    scale = max_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """image: [H, W, C] float in [0, 1] -> float32 [size[0], size[1], C].

    Bicubic with anti-aliasing (scikit-image), clipped to [0, 1]; an image already
    of that size is returned as float32 unchanged.
    """
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image.astype(np.float32)
    from skimage.transform import resize

    resized = resize(image, (h, w, image.shape[-1]), order=3, anti_aliasing=True)
    return np.clip(resized, 0.0, 1.0).astype(np.float32)


def fit_image(image: np.ndarray, max_side: int) -> np.ndarray:
    """image: [H, W, C] -> resized so its longer side is ``max_side`` (aspect kept)."""
    return resize_image(image, fit_size(image.shape, max_side))
