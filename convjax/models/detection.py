"""Detection heads: YOLO (v1 and v2 layouts), classification with localization, landmarks,
and the course's sliding-window classifier with its fully convolutional twin.

The backbone is a small Darknet-style stack (3x3 conv, BatchNorm, leaky ReLU; 2x2 max
pool between stages), so an ``H x W`` image gives an ``H / 2^pools`` grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.models.blocks import batch_norm
from convjax.models.checks import check_images
from convjax.models.layers import Conv
from convjax.models.registry import register
from convjax.ops.pooling import max_pool

YOLO_VERSIONS = ("v1", "v2")


class DarknetBackbone(nn.Module):
    """Stages of ``conv3x3-BN-leaky`` with a 2x2 max pool after each of the first ``pools``.

    x: [B, H, W, C] -> [B, H / 2^pools, W / 2^pools, widths[-1]].
    """

    widths: Sequence[int] = (16, 32, 64, 128)
    pools: int = 3
    dtype: Any = jnp.float32
    axis_name: str | None = None
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i, width in enumerate(self.widths):
            x = Conv(
                width,
                (3, 3),
                padding="SAME",
                use_bias=False,
                dtype=self.dtype,
                conv_impl=self.conv_impl,
                name=f"conv{i}",
            )(x)
            x = batch_norm(train, self.axis_name, self.dtype, f"bn{i}")(x)
            x = nn.leaky_relu(x, 0.1)
            if i < self.pools:
                x = max_pool(x, 2)
        return x


def _check_detection_input(x: jax.Array, model: str, pools: int) -> None:
    check_images(x, model=model, channels=(1, 3), min_size=2**pools)
    if x.shape[1] % 2**pools or x.shape[2] % 2**pools:
        raise ValueError(
            f"{model} with {pools} pools needs H and W divisible by {2**pools}; "
            f"got shape {tuple(x.shape)}"
        )


@register("yolo")
class YOLO(nn.Module):
    """A YOLO head on a Darknet-style backbone.

    ``version='v2'``: outputs ``[B, S, S, num_anchors, 5 + num_classes]``;
    ``version='v1'``: outputs ``[B, S, S, num_predictors * 5 + num_classes]``
    (layouts in :mod:`convjax.detection.yolo`), with ``S = H / 2^pools``.
    """

    num_classes: int = 3
    version: str = "v2"
    num_anchors: int = 5
    num_predictors: int = 2
    widths: Sequence[int] = (16, 32, 64, 128)
    pools: int = 3
    head_width: int = 128
    dtype: Any = jnp.float32
    axis_name: str | None = None
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: [B, H, W, C] -> raw grid outputs (see the class docstring)."""
        if self.version not in YOLO_VERSIONS:
            raise ValueError(f"Unknown YOLO version {self.version!r}; valid: v1, v2")
        _check_detection_input(x, "yolo", self.pools)
        x = DarknetBackbone(
            self.widths, self.pools, self.dtype, self.axis_name, self.conv_impl, name="backbone"
        )(x.astype(self.dtype), train)
        x = Conv(
            self.head_width,
            (3, 3),
            padding="SAME",
            use_bias=False,
            dtype=self.dtype,
            conv_impl=self.conv_impl,
            name="head_conv",
        )(x)
        x = batch_norm(train, self.axis_name, self.dtype, "head_bn")(x)
        x = nn.leaky_relu(x, 0.1)
        if self.version == "v2":
            channels = self.num_anchors * (5 + self.num_classes)
        else:
            channels = self.num_predictors * 5 + self.num_classes
        out = Conv(channels, (1, 1), dtype=self.dtype, conv_impl=self.conv_impl, name="head_out")(
            x
        ).astype(jnp.float32)
        if self.version == "v2":
            out = out.reshape(out.shape[:3] + (self.num_anchors, 5 + self.num_classes))
        return out


@register("localization_net")
class LocalizationNet(nn.Module):
    """Classification with localization: ``[B, H, W, C] -> [B, 5 + num_classes]``,
    the course's ``(p_c, b_x, b_y, b_h, b_w, c_1..c_n)`` (p_c and classes as logits)."""

    num_classes: int = 3
    widths: Sequence[int] = (16, 32, 64, 128)
    pools: int = 3
    dtype: Any = jnp.float32
    axis_name: str | None = None
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_detection_input(x, "localization_net", self.pools)
        x = DarknetBackbone(
            self.widths, self.pools, self.dtype, self.axis_name, self.conv_impl, name="backbone"
        )(x.astype(self.dtype), train)
        x = x.reshape((x.shape[0], -1))  # keeps where things are, unlike global pooling
        x = nn.relu(nn.Dense(256, dtype=self.dtype, name="fc")(x))
        return nn.Dense(5 + self.num_classes, dtype=self.dtype, name="out")(x).astype(jnp.float32)


@register("landmark_net")
class LandmarkNet(nn.Module):
    """Landmark regression: ``[B, H, W, C] -> [B, num_landmarks, 2]`` normalised points."""

    num_landmarks: int = 5
    num_classes: int | None = None  # unused; accepted so configs can pass it uniformly
    widths: Sequence[int] = (16, 32, 64, 128)
    pools: int = 3
    dtype: Any = jnp.float32
    axis_name: str | None = None
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_detection_input(x, "landmark_net", self.pools)
        x = DarknetBackbone(
            self.widths, self.pools, self.dtype, self.axis_name, self.conv_impl, name="backbone"
        )(x.astype(self.dtype), train)
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(256, dtype=self.dtype, name="fc")(x))
        x = nn.Dense(2 * self.num_landmarks, dtype=self.dtype, name="out")(x)
        return x.astype(jnp.float32).reshape(x.shape[0], self.num_landmarks, 2)


@register("window_classifier")
class WindowClassifier(nn.Module):
    """The course's sliding-window classifier on ``window x window`` crops.

    14x14x3 -> conv 5x5 (16) -> 10x10x16 -> max pool 2 -> 5x5x16 -> FC 400 -> FC 400 ->
    num_classes. ``[B, window, window, C] -> [B, num_classes]`` logits.
    """

    num_classes: int = 4
    window: int = 14
    features: int = 16
    hidden: int = 400
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, model="window_classifier")
        if x.shape[1:3] != (self.window, self.window):
            raise ValueError(
                f"window_classifier takes {self.window}x{self.window} crops [B, H, W, C]; got "
                f"{tuple(x.shape)}. Use window_classifier_conv for whole images."
            )
        x = nn.relu(
            Conv(
                self.features,
                (5, 5),
                padding="VALID",
                dtype=self.dtype,
                conv_impl=self.conv_impl,
                name="conv",
            )(x.astype(self.dtype))
        )
        x = max_pool(x, 2)
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
        x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc2")(x))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc3")(x).astype(jnp.float32)


@register("window_classifier_conv")
class WindowClassifierConv(nn.Module):
    """:class:`WindowClassifier` with its FC layers as convolutions (FC 400 -> 5x5 conv,
    FC -> 1x1 conv), so one pass over a larger image classifies every window:
    ``[B, H, W, C] -> [B, (H - window) / 2 + 1, (W - window) / 2 + 1, num_classes]``.

    Its parameters come from a trained :class:`WindowClassifier` through
    :func:`convjax.detection.sliding_window.convolutionalize`.
    """

    num_classes: int = 4
    window: int = 14
    features: int = 16
    hidden: int = 400
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, model="window_classifier_conv", min_size=self.window)
        pooled = (self.window - 4) // 2
        x = nn.relu(
            Conv(
                self.features,
                (5, 5),
                padding="VALID",
                dtype=self.dtype,
                conv_impl=self.conv_impl,
                name="conv",
            )(x.astype(self.dtype))
        )
        x = max_pool(x, 2)
        x = nn.relu(
            Conv(
                self.hidden,
                (pooled, pooled),
                padding="VALID",
                dtype=self.dtype,
                conv_impl=self.conv_impl,
                name="fc1",
            )(x)
        )
        x = nn.relu(
            Conv(self.hidden, (1, 1), dtype=self.dtype, conv_impl=self.conv_impl, name="fc2")(x)
        )
        return Conv(
            self.num_classes, (1, 1), dtype=self.dtype, conv_impl=self.conv_impl, name="fc3"
        )(x).astype(jnp.float32)
