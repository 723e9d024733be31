"""Colour preservation: luminance-only style transfer in YUV (Gatys et al., 2016).

"Preserving Color in Neural Artistic Style Transfer" transfers style on the
luminance channel only: the style image's luminance is matched to the content's
mean and standard deviation, the network sees luminance images, and the result's
luminance is recombined with the content image's chrominance (U, V).

Colours are ITU-R BT.601 YUV on RGB in [0, 1] (the same matrix as
``skimage.color.rgb2yuv``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Rows give Y, U, V as combinations of R, G, B (BT.601).
_YUV_FROM_RGB = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.14714119, -0.28886916, 0.43601035],
        [0.61497538, -0.51496512, -0.10001026],
    ],
    np.float32,
)
_RGB_FROM_YUV = np.linalg.inv(_YUV_FROM_RGB.astype(np.float64)).astype(np.float32)


def _check_rgb(x: jax.Array, what: str) -> None:
    if x.shape[-1] != 3:
        raise ValueError(f"{what} must have 3 channels [..., 3]; got shape {tuple(x.shape)}")


def rgb_to_yuv(rgb: jax.Array) -> jax.Array:
    """rgb: [..., 3] in [0, 1] -> yuv [..., 3] (Y in [0, 1], U and V centred on 0)."""
    _check_rgb(rgb, "rgb_to_yuv input")
    return jnp.einsum("...c,yc->...y", rgb, _YUV_FROM_RGB, precision=jax.lax.Precision.HIGHEST)


def yuv_to_rgb(yuv: jax.Array) -> jax.Array:
    """yuv: [..., 3] -> rgb [..., 3] (not clipped)."""
    _check_rgb(yuv, "yuv_to_rgb input")
    return jnp.einsum("...y,cy->...c", yuv, _RGB_FROM_YUV, precision=jax.lax.Precision.HIGHEST)


def luminance(rgb: jax.Array) -> jax.Array:
    """rgb: [..., H, W, 3] -> Y: [..., H, W, 1]."""
    return rgb_to_yuv(rgb)[..., :1]


def match_luminance(style_y: jax.Array, content_y: jax.Array) -> jax.Array:
    """Shifts and scales the style luminance to the content's mean and std.

    style_y: [..., H_s, W_s, 1], content_y: [..., H_c, W_c, 1] (leading axes broadcast)
    -> [..., H_s, W_s, 1]: ``sigma_C / sigma_S * (L_S - mu_S) + mu_C``.
    """
    axes = (-3, -2, -1)
    mu_s, sd_s = style_y.mean(axes, keepdims=True), style_y.std(axes, keepdims=True)
    mu_c, sd_c = content_y.mean(axes, keepdims=True), content_y.std(axes, keepdims=True)
    return sd_c / jnp.maximum(sd_s, 1e-6) * (style_y - mu_s) + mu_c


def gray_to_rgb(y: jax.Array) -> jax.Array:
    """y: [..., 1] -> [..., 3], the luminance repeated so an RGB network can see it."""
    if y.shape[-1] != 1:
        raise ValueError(f"gray_to_rgb expects one channel [..., 1]; got {tuple(y.shape)}")
    return jnp.repeat(y, 3, axis=-1)


def recombine_luminance(y: jax.Array, content_rgb: jax.Array) -> jax.Array:
    """The generated luminance with the content's chrominance, back in RGB.

    y: [B, H, W, 1], content_rgb: [B, H, W, 3] -> rgb [B, H, W, 3] clipped to [0, 1].
    """
    _check_rgb(content_rgb, "content_rgb")
    if y.shape[:-1] != content_rgb.shape[:-1] or y.shape[-1] != 1:
        raise ValueError(
            f"y must be [B, H, W, 1] matching content {tuple(content_rgb.shape)}; "
            f"got {tuple(y.shape)}"
        )
    uv = rgb_to_yuv(content_rgb)[..., 1:]
    return jnp.clip(yuv_to_rgb(jnp.concatenate([y, uv], axis=-1)), 0.0, 1.0)
