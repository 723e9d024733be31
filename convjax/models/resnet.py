"""ResNets (He et al., 2015) and their plain counterparts, as families of one class.

``ResNet50 = partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck)``:

- ImageNet ResNet-18/34/50/101/152 with torchvision's structure ("v1.5": the
  stride of a bottleneck sits on its 3x3 convolution; projection shortcuts where
  the shape changes). ResNet-18: 11,689,512 and ResNet-50: 25,557,032 parameters.
- CIFAR ResNet-20/32/44/56/110 (the paper's section 4.2: a 3x3 stem, three
  stages of 16-32-64 channels, parameter-free zero-padding shortcuts "option A").
- ``resnet18_cifar``: ResNet-18 with a 3x3 stride-1 stem and no max pool, the
  usual ResNet-18 for 32x32 inputs.
- ``plain<depth>``: the same layers without skip connections (``residual=False``).

Names: ``conv1``/``bn1`` stem, ``stage1 ... stage4`` (each a tappable module),
blocks ``stage<i>/block<j>`` with ``conv1, bn1, conv2, bn2[, conv3, bn3]`` and
``downsample_conv``/``downsample_bn`` for a projection shortcut, and ``head``.
Padding is explicit and symmetric, as in torchvision, so converted weights give
the same logits at any input size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.models.blocks import batch_norm, choose
from convjax.models.checks import check_images
from convjax.models.layers import Conv
from convjax.models.registry import register_alias
from convjax.ops.pooling import max_pool

conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
SHORTCUTS = ("projection", "zero_pad")


def same_padding(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """PyTorch's symmetric ``padding=kernel // 2``.

    Flax's ``'SAME'`` pads stride-2 convolutions of even inputs asymmetrically.
    """
    return ((kernel // 2, kernel // 2), (kernel // 2, kernel // 2))


class ResidualBlock(nn.Module):
    """Shared attributes and the shortcut of :class:`BasicBlock` and :class:`Bottleneck`."""

    features: int
    strides: int = 1
    residual: bool = True
    shortcut: str = "projection"
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    axis_name: str | None = None
    conv_impl: str = "auto"
    expansion: ClassVar[int] = 1

    def conv(self, features: int, kernel: int, strides: int = 1, name: str = "") -> nn.Module:
        return Conv(
            features,
            (kernel, kernel),
            strides=strides,
            padding=same_padding(kernel),
            use_bias=False,
            kernel_init=conv_init,
            dtype=self.dtype,
            conv_impl=self.conv_impl,
            name=name,
        )

    def norm(self, train: bool, name: str, zero_init: bool = False) -> nn.Module:
        return batch_norm(train, self.axis_name, self.dtype, name, zero_init)

    def add_shortcut(self, x: jax.Array, y: jax.Array, train: bool) -> jax.Array:
        """y + shortcut(x), then ReLU; a plain block (``residual=False``) is just ReLU(y)."""
        if not self.residual:
            return nn.relu(y)
        if self.strides != 1 or x.shape[-1] != y.shape[-1]:
            if self.shortcut == "projection":
                x = self.conv(y.shape[-1], 1, self.strides, name="downsample_conv")(x)
                x = self.norm(train, "downsample_bn")(x)
            else:  # zero_pad: subsample, then pad the new channels with zeros ("option A")
                x = x[:, :: self.strides, :: self.strides, :]
                extra = y.shape[-1] - x.shape[-1]
                x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
        return nn.relu(y + x)


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions: x [B, H, W, C] -> [B, H/s, W/s, features]."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = self.conv(self.features, 3, self.strides, name="conv1")(x)
        y = nn.relu(self.norm(train, "bn1")(y))
        y = self.conv(self.features, 3, name="conv2")(y)
        y = self.norm(train, "bn2", zero_init=self.zero_init_residual)(y)
        return self.add_shortcut(x, y, train)


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (strided), 1x1 expand: x [B, H, W, C] -> [B, H/s, W/s, 4 features]."""

    expansion: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = self.conv(self.features, 1, name="conv1")(x)
        y = nn.relu(self.norm(train, "bn1")(y))
        y = self.conv(self.features, 3, self.strides, name="conv2")(y)
        y = nn.relu(self.norm(train, "bn2")(y))
        y = self.conv(self.features * self.expansion, 1, name="conv3")(y)
        y = self.norm(train, "bn3", zero_init=self.zero_init_residual)(y)
        return self.add_shortcut(x, y, train)


class Stage(nn.Module):
    """``num_blocks`` blocks; the first one strides. x [B, H, W, C] -> [B, H/s, W/s, C']."""

    block: Callable[..., nn.Module]
    num_blocks: int
    features: int
    strides: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for j in range(self.num_blocks):
            strides = self.strides if j == 0 else 1
            x = self.block(self.features, strides=strides, name=f"block{j}")(x, train)
        return x


class ResNet(nn.Module):
    """A residual (or plain) network: stem, stages of blocks, global average pool, head.

    Attributes:
      stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
      block: :class:`BasicBlock` or :class:`Bottleneck`.
      stage_widths: base width of each stage (the first one strides 1, the others 2).
      stem: ``'imagenet'`` (7x7/2 convolution + 3x3/2 max pool) or ``'cifar'`` (3x3/1).
      shortcut: ``'projection'`` (1x1 conv + BN) or ``'zero_pad'`` (parameter-free)
        where a block changes shape.
      residual: ``False`` drops every skip connection (the plain network).
      zero_init_residual: start each block's last BatchNorm scale at zero.
      include_top: ``False`` returns the last stage's features [B, H', W', C'].
      dtype: compute dtype (parameters stay float32).
      axis_name: data-parallel axis over which BatchNorm statistics are averaged.
      conv_impl: the convolution: ``'auto'``, ``'cpu'`` or ``'xla'``
        (see :mod:`convjax.models.layers`).
    """

    stage_sizes: Sequence[int]
    block: type[ResidualBlock] = BasicBlock
    stage_widths: Sequence[int] = (64, 128, 256, 512)
    stem: str = "imagenet"
    shortcut: str = "projection"
    residual: bool = True
    zero_init_residual: bool = False
    num_classes: int = 1000
    include_top: bool = True
    dtype: Any = jnp.float32
    axis_name: str | None = None
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: [B, H, W, C] -> logits [B, num_classes] (or the last stage's features)."""
        check_images(x, model="resnet")
        stem_kernel, stem_stride = choose({"imagenet": (7, 2), "cifar": (3, 1)}, self.stem, "stem")
        choose(dict.fromkeys(SHORTCUTS), self.shortcut, "shortcut")
        if len(self.stage_sizes) != len(self.stage_widths):
            raise ValueError(
                f"stage_sizes {tuple(self.stage_sizes)} and stage_widths "
                f"{tuple(self.stage_widths)} must have the same length"
            )
        block = functools.partial(
            self.block,
            residual=self.residual,
            shortcut=self.shortcut,
            zero_init_residual=self.zero_init_residual,
            dtype=self.dtype,
            axis_name=self.axis_name,
            conv_impl=self.conv_impl,
        )
        x = x.astype(self.dtype)
        x = Conv(
            self.stage_widths[0],
            (stem_kernel, stem_kernel),
            strides=stem_stride,
            padding=same_padding(stem_kernel),
            use_bias=False,
            kernel_init=conv_init,
            dtype=self.dtype,
            conv_impl=self.conv_impl,
            name="conv1",
        )(x)
        x = nn.relu(batch_norm(train, self.axis_name, self.dtype, "bn1")(x))
        if self.stem == "imagenet":
            x = max_pool(x, 3, 2, padding=1)
        for i, (size, width) in enumerate(zip(self.stage_sizes, self.stage_widths, strict=True)):
            x = Stage(block, size, width, strides=1 if i == 0 else 2, name=f"stage{i + 1}")(
                x, train
            )
        if not self.include_top:
            return x
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)


IMAGENET_DEPTHS = {
    18: ((2, 2, 2, 2), BasicBlock),
    34: ((3, 4, 6, 3), BasicBlock),
    50: ((3, 4, 6, 3), Bottleneck),
    101: ((3, 4, 23, 3), Bottleneck),
    152: ((3, 8, 36, 3), Bottleneck),
}
CIFAR_DEPTHS = (20, 32, 44, 56, 110)  # 6n + 2 layers, n blocks per stage

for _depth, (_sizes, _block) in IMAGENET_DEPTHS.items():
    _family = functools.partial(ResNet, stage_sizes=_sizes, block=_block)
    register_alias(f"resnet{_depth}", _family)
    register_alias(f"plain{_depth}", functools.partial(_family, residual=False))

for _depth in CIFAR_DEPTHS:
    _n = (_depth - 2) // 6
    _family = functools.partial(
        ResNet,
        stage_sizes=(_n, _n, _n),
        block=BasicBlock,
        stage_widths=(16, 32, 64),
        stem="cifar",
        shortcut="zero_pad",
        num_classes=10,
    )
    register_alias(f"resnet{_depth}", _family)
    register_alias(f"plain{_depth}", functools.partial(_family, residual=False))

register_alias(
    "resnet18_cifar",
    functools.partial(
        ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock, stem="cifar", num_classes=10
    ),
)
