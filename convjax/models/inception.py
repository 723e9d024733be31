"""Inception v1 / GoogLeNet (Szegedy et al., 2014), built from Inception blocks.

Each :class:`InceptionBlock` runs four branches in parallel and concatenates them
on channels: a 1x1 convolution; a 1x1 bottleneck then 3x3; a 1x1 bottleneck then
5x5; a 3x3 max pool then a 1x1 projection. The 1x1 bottlenecks are what make the
block affordable (see ``docs/models.md`` and the summary test: a 5x5 convolution
from 28x28x192 to 32 channels costs ~120M multiplies, ~12.4M behind a 1x1 to 16).

- ``googlenet`` (alias ``inception_v1``): the paper's true 5x5 branch.
- ``googlenet_torchvision``: torchvision's variant, whose "5x5" branch is a 3x3
  convolution; 6,624,904 parameters at 1,000 classes (without the aux heads).

Both use torchvision's conv + BatchNorm (eps 1e-3) + ReLU units. With
``aux_logits=True`` two auxiliary classifiers (``aux1`` after ``inception4a``,
``aux2`` after ``inception4d``) are built; their logits are the outputs of the
modules ``aux1`` and ``aux2``, so a task reads them with
:func:`convjax.models.taps.apply_with_taps` and adds them to the loss with
weight :data:`AUX_LOSS_WEIGHT` (0.3, as in the paper).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.models.blocks import adaptive_avg_pool, batch_norm, flatten
from convjax.models.checks import check_images
from convjax.models.layers import Conv
from convjax.models.registry import register_alias
from convjax.ops.pooling import max_pool

AUX_LOSS_WEIGHT = 0.3

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) of each block, as in the paper's table 1.
BLOCKS = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}
POOL_AFTER = {"inception3b": 3, "inception4e": 2}  # max-pool window (stride 2) after a block

# He initialisation (fan-in, for ReLU units): every convolution's output, BatchNorm's
# input, starts near unit scale, where BatchNorm's running statistics start (mean 0,
# variance 1). torchvision's truncated normal with std 0.01 (a relic of the
# BatchNorm-less original) starts them at rms ~0.1: BatchNorm divides the gradients by
# that scale (step-1 gradient norm ~2,400 on the digits smoke run, a first SGD update
# 2.7x the weights at learning rate 0.1), and the evaluation-mode network, normalised by
# the initial variance 1, shrinks its signal ~10x per layer (logits ~1e-13) until the
# running statistics catch up, then explodes once the updates have grown the weights.
CONV_INIT = nn.initializers.he_normal()


class ConvBN(nn.Module):
    """Convolution (no bias) + BatchNorm + ReLU: x [B, H, W, C] -> [B, H', W', features]."""

    features: int
    kernel: int
    strides: int = 1
    dtype: Any = jnp.float32
    axis_name: str | None = None
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        pad = self.kernel // 2
        x = Conv(
            self.features,
            (self.kernel, self.kernel),
            strides=self.strides,
            padding=((pad, pad), (pad, pad)),
            use_bias=False,
            kernel_init=CONV_INIT,
            dtype=self.dtype,
            conv_impl=self.conv_impl,
            name="conv",
        )(x)
        return nn.relu(batch_norm(train, self.axis_name, self.dtype, "bn", epsilon=1e-3)(x))


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated: x [B, H, W, C] -> [B, H, W, sum of widths].

    ``widths`` = (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj).
    ``big_kernel`` is the kernel of the "5x5" branch (5; torchvision uses 3).
    """

    widths: tuple[int, int, int, int, int, int]
    big_kernel: int = 5
    dtype: Any = jnp.float32
    axis_name: str | None = None
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        unit = functools.partial(
            ConvBN, dtype=self.dtype, axis_name=self.axis_name, conv_impl=self.conv_impl
        )
        b1, r3, b3, r5, b5, proj = self.widths
        branch1 = unit(b1, 1, name="b1x1")(x, train)
        branch3 = unit(b3, 3, name="b3x3")(unit(r3, 1, name="b3x3_reduce")(x, train), train)
        branch5 = unit(r5, 1, name="b5x5_reduce")(x, train)
        branch5 = unit(b5, self.big_kernel, name="b5x5")(branch5, train)
        pooled = max_pool(x, 3, 1, padding=1, ceil_mode=True)
        branch_pool = unit(proj, 1, name="pool_proj")(pooled, train)
        return jnp.concatenate([branch1, branch3, branch5, branch_pool], axis=-1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: x [B, H, W, C] -> logits [B, num_classes]."""

    num_classes: int
    dropout_rate: float = 0.7
    dtype: Any = jnp.float32
    axis_name: str | None = None
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = adaptive_avg_pool(x, 4)
        x = ConvBN(
            128,
            1,
            dtype=self.dtype,
            axis_name=self.axis_name,
            conv_impl=self.conv_impl,
            name="conv",
        )(x, train)
        x = nn.relu(nn.Dense(1024, dtype=self.dtype, name="fc1")(flatten(x)))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc2")(x).astype(jnp.float32)


class GoogLeNet(nn.Module):
    """GoogLeNet: stem, nine Inception blocks, global average pool, head.

    Attributes:
      num_classes: outputs of ``head`` (and of the aux classifiers).
      big_kernel: 5 (the paper) or 3 (torchvision's variant).
      aux_logits: build the auxiliary classifiers ``aux1`` and ``aux2``.
      include_top: ``False`` returns ``inception5b`` features [B, H/32, W/32, 1024].
      dropout_rate: before ``head`` in training (torchvision 0.2; the paper 0.4).
      dtype: compute dtype (parameters stay float32).
      axis_name: data-parallel axis over which BatchNorm statistics are averaged.
      conv_impl: the convolution: ``'auto'``, ``'cpu'`` or ``'xla'``
        (see :mod:`convjax.models.layers`).
    """

    num_classes: int = 1000
    big_kernel: int = 5
    aux_logits: bool = False
    include_top: bool = True
    dropout_rate: float = 0.2
    dtype: Any = jnp.float32
    axis_name: str | None = None
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: [B, H, W, C] with H, W >= 15 -> logits [B, num_classes]."""
        check_images(x, model="googlenet", min_size=15)
        if self.big_kernel not in (3, 5):
            raise ValueError(
                f"big_kernel must be 5 (paper) or 3 (torchvision); got {self.big_kernel}"
            )
        unit = functools.partial(
            ConvBN, dtype=self.dtype, axis_name=self.axis_name, conv_impl=self.conv_impl
        )
        x = x.astype(self.dtype)
        x = unit(64, 7, strides=2, name="conv1")(x, train)
        x = max_pool(x, 3, 2, ceil_mode=True)
        x = unit(64, 1, name="conv2")(x, train)
        x = unit(192, 3, name="conv3")(x, train)
        x = max_pool(x, 3, 2, ceil_mode=True)
        for name, widths in BLOCKS.items():
            x = InceptionBlock(
                widths,
                self.big_kernel,
                dtype=self.dtype,
                axis_name=self.axis_name,
                conv_impl=self.conv_impl,
                name=name,
            )(x, train)
            if self.aux_logits and name in ("inception4a", "inception4d"):
                aux_name = "aux1" if name == "inception4a" else "aux2"
                InceptionAux(
                    self.num_classes,
                    dtype=self.dtype,
                    axis_name=self.axis_name,
                    conv_impl=self.conv_impl,
                    name=aux_name,
                )(x, train)
            if name in POOL_AFTER:
                x = max_pool(x, POOL_AFTER[name], 2, ceil_mode=True)
        if not self.include_top:
            return x
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


register_alias("googlenet", GoogLeNet)
register_alias("inception_v1", GoogLeNet)
register_alias("googlenet_torchvision", functools.partial(GoogLeNet, big_kernel=3))
