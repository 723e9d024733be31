"""VGG-11/13/16/19 (Simonyan & Zisserman, 2014), with and without BatchNorm.

Layers carry the names used in the style-transfer literature (Gatys et al.):
convolutions ``conv1_1 ... conv5_4``, and the activations after them ``relu1_1 ...``
and after each stage ``pool1 ... pool5`` are sown as intermediates, so
:func:`convjax.models.taps.extract_features` can ask for any of them. With
``batch_norm=True`` each convolution is followed by ``bn<s>_<i>``. The classifier
is ``fc6``, ``fc7`` and ``head`` (torchvision's ``classifier.0/3/6``).

The structure and parameter counts follow torchvision (VGG-16: 138,357,544 at
1,000 classes), including the adaptive average pooling to 7x7 before ``fc6``,
so inputs of any size >= 32 work and converted torchvision weights give the
same logits.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.models.blocks import POOLS, adaptive_avg_pool, batch_norm, choose, flatten
from convjax.models.checks import check_images
from convjax.models.layers import Conv
from convjax.models.registry import register_alias

# He initialisation on fan-out, as torchvision initialises VGG and ResNet.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

STAGE_WIDTHS = (64, 128, 256, 512, 512)
STAGE_SIZES = {
    11: (1, 1, 2, 2, 2),
    13: (2, 2, 2, 2, 2),
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}


class VGG(nn.Module):
    """VGG: stages of 3x3 convolutions + ReLU, each followed by a 2x2 pool.

    Attributes:
      stage_sizes: convolutions per stage (five stages of widths 64-128-256-512-512).
      num_classes: outputs of ``head``.
      batch_norm: BatchNorm after every convolution (the ``_bn`` variants).
      pool: ``'max'`` (the paper) or ``'avg'`` (what Gatys et al. use for style transfer).
      include_top: ``False`` returns the ``pool5`` features [B, H/32, W/32, 512]
        and creates no classifier parameters (a feature network).
      adaptive_pool_size: the classifier average-pools ``pool5`` to this square
        size first (torchvision: 7); ``None`` flattens ``pool5`` as it is.
      fc_width: width of ``fc6`` and ``fc7`` (4096).
      dropout_rate: dropout before ``fc7`` and ``head`` in training.
      dtype: compute dtype (parameters stay float32).
      axis_name: data-parallel axis over which BatchNorm statistics are averaged.
      conv_impl: the convolution: ``'auto'``, ``'cpu'`` or ``'xla'``
        (see :mod:`convjax.models.layers`).
    """

    stage_sizes: Sequence[int] = STAGE_SIZES[16]
    num_classes: int = 1000
    batch_norm: bool = False
    pool: str = "max"
    include_top: bool = True
    adaptive_pool_size: int | None = 7
    fc_width: int = 4096
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    axis_name: str | None = None
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: [B, H, W, C] with H, W >= 32 -> logits [B, num_classes] (or pool5 features)."""
        check_images(x, model="vgg", min_size=32)
        pool = choose(POOLS, self.pool, "pool")
        if len(self.stage_sizes) != len(STAGE_WIDTHS):
            raise ValueError(
                f"vgg has {len(STAGE_WIDTHS)} stages; got stage_sizes={tuple(self.stage_sizes)}"
            )
        x = x.astype(self.dtype)
        stages = zip(self.stage_sizes, STAGE_WIDTHS, strict=True)
        for stage, (size, width) in enumerate(stages, start=1):
            for i in range(1, size + 1):
                x = Conv(
                    width,
                    (3, 3),
                    padding=((1, 1), (1, 1)),
                    kernel_init=conv_init,
                    dtype=self.dtype,
                    conv_impl=self.conv_impl,
                    name=f"conv{stage}_{i}",
                )(x)
                if self.batch_norm:
                    x = batch_norm(train, self.axis_name, self.dtype, f"bn{stage}_{i}")(x)
                x = nn.relu(x)
                self.sow("intermediates", f"relu{stage}_{i}", x)
            x = pool(x, 2, 2)
            self.sow("intermediates", f"pool{stage}", x)
        if not self.include_top:
            return x
        if self.adaptive_pool_size is not None:
            x = adaptive_avg_pool(x, self.adaptive_pool_size)
        x = flatten(x)
        for name in ("fc6", "fc7"):
            x = nn.relu(nn.Dense(self.fc_width, dtype=self.dtype, name=name)(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)


for _depth, _sizes in STAGE_SIZES.items():
    register_alias(f"vgg{_depth}", functools.partial(VGG, stage_sizes=_sizes))
    register_alias(f"vgg{_depth}_bn", functools.partial(VGG, stage_sizes=_sizes, batch_norm=True))
