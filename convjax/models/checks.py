"""Shape checks that models run at trace time, before anything compiles."""

from __future__ import annotations

from collections.abc import Sequence

import jax


def check_images(
    x: jax.Array,
    *,
    model: str,
    channels: int | Sequence[int] | None = None,
    min_size: int | None = None,
) -> None:
    """Raises ``ValueError`` unless ``x`` is an NHWC image batch ``[B, H, W, C]``.

    Args:
      x: the model input.
      model: the model's name, for the message.
      channels: the channel count (or counts) the model accepts; ``None`` accepts any.
      min_size: the smallest height and width the architecture admits.
    """
    if x.ndim != 4:
        raise ValueError(
            f"{model} expects an NHWC image batch [B, H, W, C]; got an array of shape "
            f"{tuple(x.shape)} (rank {x.ndim}). Add a batch axis with x[None] for one image."
        )
    if channels is not None:
        allowed = (channels,) if isinstance(channels, int) else tuple(channels)
        if x.shape[-1] not in allowed:
            raise ValueError(
                f"{model} expects images with {' or '.join(map(str, allowed))} channel(s) "
                f"[B, H, W, C]; got shape {tuple(x.shape)} with C={x.shape[-1]}."
            )
    if min_size is not None and min(x.shape[1], x.shape[2]) < min_size:
        raise ValueError(
            f"{model} needs images of at least {min_size}x{min_size}; got shape {tuple(x.shape)}."
        )


def check_image_batch(images, *, expected: Sequence[int], what: str = "images") -> None:
    """Raises ``ValueError`` unless ``images`` has shape ``expected`` ``[B, H, W, C]``."""
    shape = tuple(images.shape)
    if shape != tuple(expected):
        raise ValueError(
            f"{what}: expected images of shape [B, H, W, C] = {list(expected)}; got "
            f"{list(shape)}. Check the dataset's image_size/channels against the model input."
        )
