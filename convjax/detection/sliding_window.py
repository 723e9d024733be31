"""Sliding windows, convolutionally (Sermanet et al., OverFeat).

A classifier for ``window x window`` crops whose fully connected layers are rewritten as
convolutions (the first FC layer becomes a convolution as large as its input feature
map, the others 1x1) evaluates every window of a larger image in one pass: output
position ``(i, j)`` is the classifier's output on the crop at ``(i * stride, j * stride)``,
where ``stride`` is the product of the network's strides (2 for the course's network).

:func:`convolutionalize` maps :class:`~convjax.models.detection.WindowClassifier`
parameters to :class:`~convjax.models.detection.WindowClassifierConv` ones;
:func:`crop_windows` cuts the windows explicitly (the slow reference).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp


def dense_to_conv_kernel(kernel: jax.Array, input_shape: tuple[int, int, int]) -> jax.Array:
    """A Dense kernel ``[h*w*c, out]`` acting on a flattened ``[h, w, c]`` map ->
    the equivalent ``VALID`` convolution kernel ``[h, w, c, out]`` (HWIO)."""
    h, w, c = input_shape
    if kernel.ndim != 2 or kernel.shape[0] != h * w * c:
        raise ValueError(
            f"Dense kernel [h*w*c, out] = [{h * w * c}, out] expected for input {input_shape}; "
            f"got {tuple(kernel.shape)}"
        )
    return kernel.reshape(h, w, c, kernel.shape[1])  # row-major flatten order is (h, w, c)


def convolutionalize(params: Mapping[str, Any], window: int = 14) -> dict[str, Any]:
    """WindowClassifier params -> WindowClassifierConv params (same layer names)."""
    pooled = (window - 4) // 2
    features = params["conv"]["kernel"].shape[-1]
    fc1 = params["fc1"]
    out = {"conv": dict(params["conv"])}
    out["fc1"] = {
        "kernel": dense_to_conv_kernel(fc1["kernel"], (pooled, pooled, features)),
        "bias": fc1["bias"],
    }
    for name in ("fc2", "fc3"):
        kernel = params[name]["kernel"]
        out[name] = {"kernel": kernel.reshape(1, 1, *kernel.shape), "bias": params[name]["bias"]}
    return out


def crop_windows(images: jax.Array, window: int, stride: int) -> jax.Array:
    """images: [B, H, W, C] -> every ``window x window`` crop at ``stride``:
    ``[B, rows, cols, window, window, C]``."""
    _, height, width, _ = images.shape
    rows = (height - window) // stride + 1
    cols = (width - window) // stride + 1
    ys = jnp.arange(rows) * stride
    xs = jnp.arange(cols) * stride

    def crop(image, y, x):
        return jax.lax.dynamic_slice(image, (y, x, 0), (window, window, image.shape[-1]))

    per_x = jax.vmap(crop, in_axes=(None, None, 0))
    per_yx = jax.vmap(per_x, in_axes=(None, 0, None))
    return jax.vmap(per_yx, in_axes=(0, None, None))(images, ys, xs)
