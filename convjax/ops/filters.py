"""Named 3x3 edge filters and edge detection by convolution.

The filters follow the course's convention for cross-correlation: the vertical-edge
filter is ``[[1, 0, -1]] * 3``, so a bright-left / dark-right edge gives a positive
response. That is the negative of the image derivative along x (and along y for the
horizontal filters) as ``scipy.ndimage.sobel`` / ``skimage.filters`` compute it; edge
magnitudes are the same either way.
"""

from __future__ import annotations

import functools

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from convjax.ops.conv import Padding, check_conv_args, conv2d

_VERTICAL = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], np.float32)
_SOBEL_X = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32)
_SCHARR_X = np.array([[3, 0, -3], [10, 0, -10], [3, 0, -3]], np.float32)

FILTERS: dict[str, np.ndarray] = {
    "vertical": _VERTICAL,
    "horizontal": _VERTICAL.T.copy(),
    "sobel_x": _SOBEL_X,
    "sobel_y": _SOBEL_X.T.copy(),
    "scharr_x": _SCHARR_X,
    "scharr_y": _SCHARR_X.T.copy(),
}
"""Name -> 3x3 filter ``[f_h, f_w]``. ``*_x`` / ``vertical`` respond to vertical edges."""

EDGE_OPERATORS: dict[str, tuple[str, str]] = {
    "simple": ("vertical", "horizontal"),
    "sobel": ("sobel_x", "sobel_y"),
    "scharr": ("scharr_x", "scharr_y"),
}
"""Edge operator -> its (x, y) filter pair in :data:`FILTERS`."""

for _kernel in FILTERS.values():
    _kernel.setflags(write=False)


def list_filters() -> list[str]:
    """Names accepted by :func:`get_filter`."""
    return sorted(FILTERS)


def get_filter(name: str) -> np.ndarray:
    """The named 3x3 filter ``[3, 3]`` float32 (a writable copy)."""
    if name not in FILTERS:
        raise ValueError(f"Unknown filter {name!r}; valid: {', '.join(list_filters())}")
    return FILTERS[name].copy()


def filter_bank(names: str | list[str] | tuple[str, ...]) -> np.ndarray:
    """Named filters stacked as conv2d weights ``[3, 3, 1, len(names)]`` (HWIO)."""
    names = [names] if isinstance(names, str) else list(names)
    return np.stack([get_filter(n) for n in names], axis=-1)[:, :, None, :]


def to_grayscale(images: jax.Array) -> jax.Array:
    """``[..., H, W, 3]`` RGB -> ``[..., H, W, 1]`` luma (Rec. 601, as TensorFlow); float32."""
    return dm_pix.rgb_to_grayscale(jnp.asarray(images, jnp.float32))


def _as_batch(image: jax.Array) -> jax.Array:
    """[H, W] / [H, W, C] / [B, H, W, C] -> [B, H, W, C], checking C is 1 or 3."""
    shape = tuple(np.shape(image))
    if len(shape) == 2:
        shape = (1, *shape, 1)
    elif len(shape) == 3:
        shape = (1, *shape)
    elif len(shape) != 4:
        raise ValueError(
            "edge_detect expects an image [H, W], [H, W, C] or a batch [B, H, W, C] with "
            f"C = 1 (grayscale) or 3 (RGB); got shape {shape}."
        )
    if shape[-1] not in (1, 3):
        raise ValueError(
            "edge_detect expects C = 1 (grayscale) or 3 (RGB) channels in [H, W, C] / "
            f"[B, H, W, C]; got shape {tuple(np.shape(image))}."
        )
    return jnp.reshape(jnp.asarray(image), shape)


@functools.partial(jax.jit, static_argnames=("padding",))
def _edge_magnitude(images: jax.Array, filters: jax.Array, padding: Padding) -> jax.Array:
    """images: [B, H, W, 1 or 3] -> [B, H_out, W_out] float32."""
    gray = to_grayscale(images) if images.shape[-1] == 3 else images.astype(jnp.float32)
    gradients = conv2d(gray, filters, padding=padding)
    # Indexing the two maps (not a sum over the size-2 axis) keeps XLA:CPU's fused loop
    # vectorised: ~60x faster on a 512x512 image.
    return jnp.sqrt(jnp.square(gradients[..., 0]) + jnp.square(gradients[..., 1]))


def _hashable(padding: Padding) -> Padding:
    """Lists -> tuples, so a padding validated by check_conv_args can be a static arg."""
    if isinstance(padding, list | tuple):
        return tuple(_hashable(p) for p in padding)  # type: ignore[misc]
    return padding


def edge_detect(image: jax.Array, operator: str = "sobel", padding: Padding = "same") -> jax.Array:
    """Edge strength ``sqrt(g_x**2 + g_y**2)`` from an operator's two filters.

    Args:
      image: ``[H, W]``, ``[H, W, C]`` or ``[B, H, W, C]`` with C = 1 or 3; RGB is
        converted to grayscale first. Values are used as given (e.g. 0..255 stays so).
      operator: ``'simple'`` (vertical/horizontal), ``'sobel'`` or ``'scharr'``.
      padding: conv2d padding; ``'same'`` (zeros) keeps the image size.

    Returns:
      float32 ``[H_out, W_out]`` for one image, ``[B, H_out, W_out]`` for a batch.
    """
    if operator not in EDGE_OPERATORS:
        raise ValueError(
            f"Unknown edge operator {operator!r}; valid: {', '.join(sorted(EDGE_OPERATORS))}"
        )
    images = _as_batch(image)
    # Validate the padding and image size here so bad input fails before compiling.
    check_conv_args((*images.shape[:3], 1), (3, 3, 1, 2), None, 1, padding)
    filters = jnp.asarray(filter_bank(EDGE_OPERATORS[operator]))
    magnitude = _edge_magnitude(images, filters, _hashable(padding))
    return magnitude if np.ndim(image) == 4 else magnitude[0]
