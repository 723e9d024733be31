"""Affine image geometry shared by images, boxes and landmarks (pure JAX).

Conventions:

- Pixel coordinates are ``(y, x)`` = (row, column) with pixel centres at integers
  ``0 .. H-1`` (the convention of ``scipy.ndimage`` and ``dm_pix.affine_transform``).
- Boxes and landmarks are *normalised*: ``y / H`` and ``x / W`` in 0..1 measured from
  the top-left image edge (tfds' ``BBoxFeature`` convention); boxes are
  ``[..., 4] = (ymin, xmin, ymax, xmax)``, landmarks ``[..., 2] = (y, x)``. A normalised
  coordinate ``u`` is the pixel coordinate ``u * size - 0.5``.
- A transform is a *forward* 3x3 matrix ``F`` acting on ``(y, x, 1)`` column vectors:
  a point of the input image at ``p`` appears in the output at ``F @ p``. Transforms
  compose by matrix product: ``second @ first``. An image is resampled once, pulling
  every output pixel from ``inv(F) @ o`` (bilinear, ``fill`` outside).

Rotation angles are in radians; a positive angle turns the content counter-clockwise
as seen on screen (y points down).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _centre(height: int, width: int) -> tuple[float, float]:
    return (height - 1) / 2.0, (width - 1) / 2.0


def _about_centre(linear: jax.Array, height: int, width: int) -> jax.Array:
    """[2, 2] linear map applied about the image centre -> [3, 3] forward matrix."""
    cy, cx = _centre(height, width)
    centre = jnp.array([cy, cx], jnp.float32)
    linear = jnp.asarray(linear, jnp.float32)
    offset = centre - linear @ centre
    return jnp.concatenate(
        [jnp.concatenate([linear, offset[:, None]], axis=1), jnp.array([[0.0, 0.0, 1.0]])]
    )


def identity_matrix() -> jax.Array:
    return jnp.eye(3, dtype=jnp.float32)


def translation_matrix(dy: jax.Array | float, dx: jax.Array | float) -> jax.Array:
    """Moves content by ``(dy, dx)`` pixels."""
    return jnp.array([[1.0, 0.0, dy], [0.0, 1.0, dx], [0.0, 0.0, 1.0]], jnp.float32)


def flip_matrix(height: int, width: int) -> jax.Array:
    """Mirrors left-right: ``x -> W - 1 - x``."""
    del height
    return jnp.array([[1.0, 0.0, 0.0], [0.0, -1.0, width - 1.0], [0.0, 0.0, 1.0]], jnp.float32)


def rotation_matrix(angle: jax.Array | float, height: int, width: int) -> jax.Array:
    """Rotates content counter-clockwise (on screen) by ``angle`` radians about the centre."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    return _about_centre(jnp.array([[c, -s], [s, c]]), height, width)


def shear_matrix(angle: jax.Array | float, height: int, width: int) -> jax.Array:
    """Shears horizontally about the centre: ``x -> x + tan(angle) * (y - cy)``."""
    return _about_centre(jnp.array([[1.0, 0.0], [jnp.tan(angle), 1.0]]), height, width)


def scale_matrix(
    scale_y: jax.Array | float, scale_x: jax.Array | float, height: int, width: int
) -> jax.Array:
    """Scales content about the centre (``> 1`` zooms in)."""
    return _about_centre(jnp.array([[scale_y, 0.0], [0.0, scale_x]]), height, width)


def crop_matrix(
    top: jax.Array | float,
    left: jax.Array | float,
    crop_height: jax.Array | float,
    crop_width: jax.Array | float,
    height: int,
    width: int,
) -> jax.Array:
    """Maps the input window ``[top, top + crop_height) x [left, left + crop_width)``
    (in pixel-edge units) onto the whole ``height x width`` output."""
    sy, sx = height / crop_height, width / crop_width
    # Edge coordinates u = p + 0.5 scale about the window's top-left corner.
    return jnp.array(
        [
            [sy, 0.0, (0.5 - top) * sy - 0.5],
            [0.0, sx, (0.5 - left) * sx - 0.5],
            [0.0, 0.0, 1.0],
        ],
        jnp.float32,
    )


def warp_image(image: jax.Array, forward: jax.Array, fill: float = 0.0) -> jax.Array:
    """image: [H, W, C], forward: [3, 3] -> [H, W, C] resampled once (bilinear).

    Each output pixel ``o`` blends the four input pixels around ``inv(forward) @ o``;
    taps outside the image read ``fill`` (scipy.ndimage's ``'grid-constant'`` mode).
    This gathers whole pixels (all channels per tap); ``dm_pix.affine_transform`` on an
    HWC image interpolates over the channel axis as well (8 taps per value) and ran
    50-100x slower on CPU for 32x32 batches, so it is not used here.
    """
    height, width, channels = image.shape
    pull = jnp.linalg.inv(forward)
    rows, cols = jnp.meshgrid(
        jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij"
    )
    src_y = pull[0, 0] * rows + pull[0, 1] * cols + pull[0, 2]
    src_x = pull[1, 0] * rows + pull[1, 1] * cols + pull[1, 2]
    y0, x0 = jnp.floor(src_y), jnp.floor(src_x)
    frac_y, frac_x = src_y - y0, src_x - x0
    pixels = image.reshape(height * width, channels)
    out = jnp.zeros((height, width, channels), image.dtype)
    for dy, weight_y in ((0, 1.0 - frac_y), (1, frac_y)):
        for dx, weight_x in ((0, 1.0 - frac_x), (1, frac_x)):
            y, x = y0 + dy, x0 + dx
            inside = (y >= 0) & (y <= height - 1) & (x >= 0) & (x <= width - 1)
            index = (jnp.clip(y, 0, height - 1) * width + jnp.clip(x, 0, width - 1)).astype(
                jnp.int32
            )
            tap = jnp.take(pixels, index.reshape(-1), axis=0).reshape(height, width, channels)
            tap = jnp.where(inside[..., None], tap, fill)
            out = out + (weight_y * weight_x)[..., None].astype(image.dtype) * tap
    return out


def transform_points(points: jax.Array, forward: jax.Array, height: int, width: int) -> jax.Array:
    """points: [..., 2] normalised (y, x) -> [..., 2] where the transform moves them."""
    size = jnp.array([height, width], jnp.float32)
    pixels = points * size - 0.5
    moved = pixels @ forward[:2, :2].T + forward[:2, 2]
    return (moved + 0.5) / size


def transform_boxes(boxes: jax.Array, forward: jax.Array, height: int, width: int) -> jax.Array:
    """boxes: [..., 4] normalised (ymin, xmin, ymax, xmax) -> the boxes around the
    transformed corners, clipped to the image."""
    ymin, xmin, ymax, xmax = jnp.moveaxis(boxes, -1, 0)
    corners = jnp.stack(
        [
            jnp.stack([ymin, xmin], -1),
            jnp.stack([ymin, xmax], -1),
            jnp.stack([ymax, xmin], -1),
            jnp.stack([ymax, xmax], -1),
        ],
        axis=-2,
    )  # [..., 4, 2]
    moved = transform_points(corners, forward, height, width)
    low, high = moved.min(axis=-2), moved.max(axis=-2)
    return jnp.clip(jnp.concatenate([low, high], axis=-1), 0.0, 1.0)
