"""Network in Network (Lin, Chen & Yan, 2013): 1x1 convolutions as per-pixel MLPs.

A 1x1 convolution mixes the channels of every pixel independently: a dense
layer applied at each position. :class:`MLPConv` stacks one spatial convolution
and two 1x1 convolutions ("cccp" layers in the original Caffe model); ``nin``
is the paper's CIFAR-10 network, which ends without any dense layer: its last
1x1 convolution has one channel per class and a global average pool gives the
logits (0.97M parameters at 10 classes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.models.blocks import avg_pool
from convjax.models.checks import check_images
from convjax.models.layers import Conv
from convjax.models.registry import register
from convjax.ops.pooling import max_pool


class MLPConv(nn.Module):
    """kxk convolution then 1x1 convolutions, each + ReLU: [B, H, W, C] -> [B, H, W, widths[-1]].

    ``relu_last=False`` leaves the last 1x1 linear (class scores).
    """

    widths: Sequence[int]
    kernel: int
    relu_last: bool = True
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = self.kernel // 2
        for i, width in enumerate(self.widths):
            size = self.kernel if i == 0 else 1
            padding = ((pad, pad), (pad, pad)) if i == 0 else ((0, 0), (0, 0))
            name = "conv" if i == 0 else f"cccp{i}"
            x = Conv(
                width,
                (size, size),
                padding=padding,
                dtype=self.dtype,
                conv_impl=self.conv_impl,
                name=name,
            )(x)
            if self.relu_last or i < len(self.widths) - 1:
                x = nn.relu(x)
        return x


@register("nin")
class NiN(nn.Module):
    """NiN for CIFAR: three MLPConv blocks, pooling + dropout between, global average pool."""

    num_classes: int = 10
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    axis_name: str | None = None  # no BatchNorm; kept for a uniform model interface
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: [B, H, W, C] with H, W >= 5 -> logits [B, num_classes]."""
        check_images(x, model="nin", min_size=5)
        x = x.astype(self.dtype)
        x = MLPConv((192, 160, 96), 5, dtype=self.dtype, conv_impl=self.conv_impl, name="mlpconv1")(
            x
        )
        x = max_pool(x, 3, 2, padding=1)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = MLPConv(
            (192, 192, 192), 5, dtype=self.dtype, conv_impl=self.conv_impl, name="mlpconv2"
        )(x)
        x = avg_pool(x, 3, 2, padding=1)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = MLPConv(
            (192, 192, self.num_classes),
            3,
            relu_last=False,
            dtype=self.dtype,
            conv_impl=self.conv_impl,
            name="mlpconv3",
        )(x)
        return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
