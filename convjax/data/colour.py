"""Colour augmentations on float images in 0..1 (pure JAX, explicit keys).

Every function takes ``key`` and an image ``[H, W, C]`` float in 0..1 and returns an
image of the same shape, clipped back to 0..1. Brightness, contrast, saturation and
hue come from dm-pix.
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

# AlexNet-style PCA lighting constants for ImageNet RGB in 0..1 units (the values
# used by fb.resnet.torch and torchvision references): eigenvalues and eigenvectors
# (columns) of the pixel covariance.
IMAGENET_EIGENVALUES = np.array([0.2175, 0.0188, 0.0045], np.float32)
IMAGENET_EIGENVECTORS = np.array(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]],
    np.float32,
)


def _check_rgb(image: jax.Array, op: str) -> None:
    if image.shape[-1] != 3:
        raise ValueError(
            f"{op} needs RGB images [H, W, 3]; got shape {tuple(image.shape)}. "
            "Set dataset.channels = 3 or drop the op."
        )


def colour_shift(key: jax.Array, image: jax.Array, delta: float = 0.1) -> jax.Array:
    """Adds one offset per channel, uniform in [-delta, delta]."""
    offsets = jax.random.uniform(key, (image.shape[-1],), minval=-delta, maxval=delta)
    return jnp.clip(image + offsets, 0.0, 1.0)


def rgb_pca(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """images: [..., 3] in 0..1 -> (eigenvalues [3] descending, eigenvectors [3, 3] as
    columns) of the RGB covariance over all pixels, for PCA lighting from the data."""
    pixels = np.asarray(images, np.float64).reshape(-1, 3)
    values, vectors = np.linalg.eigh(np.cov(pixels, rowvar=False))
    order = np.argsort(values)[::-1]
    return values[order].astype(np.float32), vectors[:, order].astype(np.float32)


def pca_lighting(
    key: jax.Array,
    image: jax.Array,
    std: float = 0.1,
    eigenvalues: np.ndarray = IMAGENET_EIGENVALUES,
    eigenvectors: np.ndarray = IMAGENET_EIGENVECTORS,
) -> jax.Array:
    """AlexNet lighting noise: adds ``eigenvectors @ (alpha * eigenvalues)`` to every
    pixel, ``alpha ~ N(0, std^2)`` per component."""
    _check_rgb(image, "pca_lighting")
    alpha = std * jax.random.normal(key, (3,))
    offset = jnp.asarray(eigenvectors) @ (alpha * jnp.asarray(eigenvalues))
    return jnp.clip(image + offset, 0.0, 1.0)


def brightness(key: jax.Array, image: jax.Array, delta: float = 0.2) -> jax.Array:
    """Adds one offset to all channels, uniform in [-delta, delta]."""
    return jnp.clip(dm_pix.random_brightness(key, image, delta), 0.0, 1.0)


def contrast(key: jax.Array, image: jax.Array, lower: float = 0.8, upper: float = 1.2) -> jax.Array:
    """Scales each channel's deviation from its mean by a factor in [lower, upper]."""
    return jnp.clip(dm_pix.random_contrast(key, image, lower, upper), 0.0, 1.0)


def saturation(
    key: jax.Array, image: jax.Array, lower: float = 0.8, upper: float = 1.2
) -> jax.Array:
    """Scales saturation by a factor in [lower, upper] (RGB only)."""
    _check_rgb(image, "saturation")
    return jnp.clip(dm_pix.random_saturation(key, image, lower, upper), 0.0, 1.0)


def hue(key: jax.Array, image: jax.Array, delta: float = 0.05) -> jax.Array:
    """Rotates hue by up to ``delta`` turns either way (RGB only)."""
    _check_rgb(image, "hue")
    return jnp.clip(dm_pix.random_hue(key, image, delta), 0.0, 1.0)
