"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012).

- ``alexnet``: the widely used single-tower variant (torchvision's): channels
  64-192-384-256-256, no LRN, 61,100,840 parameters at 1,000 classes.
- ``alexnet_original``: the paper's network: 96-256-384-384-256 channels, the
  two-GPU split as grouped convolutions (conv2, conv4, conv5 see only their own
  half), local response normalisation after conv1 and conv2, unpadded conv1 for
  227x227 inputs; 60,965,224 parameters.

Names: ``conv1 ... conv5``, sown ``pool1``, ``pool2``, ``pool5``, then ``fc6``,
``fc7``, ``head``. Both average-pool ``pool5`` to 6x6 before ``fc6`` (identity at
the canonical input size), so any input of at least 63x63 (67x67 original) works.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.models.blocks import (
    adaptive_avg_pool,
    choose,
    flatten,
    local_response_norm,
)
from convjax.models.checks import check_images
from convjax.models.layers import Conv
from convjax.models.registry import register_alias
from convjax.ops.pooling import max_pool

# (features, kernel, stride, padding, groups) per convolution, and where pools/LRN go.
VARIANTS = {
    "torchvision": {
        "convs": (
            (64, 11, 4, 2, 1),
            (192, 5, 1, 2, 1),
            (384, 3, 1, 1, 1),
            (256, 3, 1, 1, 1),
            (256, 3, 1, 1, 1),
        ),
        "lrn": False,
        "min_size": 63,
    },
    "original": {
        "convs": (
            (96, 11, 4, 0, 1),
            (256, 5, 1, 2, 2),
            (384, 3, 1, 1, 1),
            (384, 3, 1, 1, 2),
            (256, 3, 1, 1, 2),
        ),
        "lrn": True,
        "min_size": 67,
    },
}


class AlexNet(nn.Module):
    """AlexNet: five convolutions (pools after 1, 2 and 5), three dense layers.

    Attributes:
      variant: ``'torchvision'`` (single tower) or ``'original'`` (grouped + LRN).
      num_classes: outputs of ``head``.
      include_top: ``False`` returns ``pool5`` [B, H', W', C].
      dropout_rate: dropout before ``fc6`` and ``fc7`` in training.
      dtype: compute dtype (parameters stay float32).
      conv_impl: the convolution: ``'auto'``, ``'cpu'`` or ``'xla'``
        (see :mod:`convjax.models.layers`).
    """

    variant: str = "torchvision"
    num_classes: int = 1000
    include_top: bool = True
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    axis_name: str | None = None  # no BatchNorm; kept for a uniform model interface
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: [B, H, W, C] -> logits [B, num_classes]."""
        spec = choose(VARIANTS, self.variant, "AlexNet variant")
        check_images(x, model=f"alexnet ({self.variant})", min_size=spec["min_size"])
        x = x.astype(self.dtype)
        for i, (features, kernel, stride, pad, groups) in enumerate(spec["convs"], start=1):
            x = Conv(
                features,
                (kernel, kernel),
                strides=stride,
                padding=((pad, pad), (pad, pad)),
                feature_group_count=groups,
                dtype=self.dtype,
                conv_impl=self.conv_impl,
                name=f"conv{i}",
            )(x)
            x = nn.relu(x)
            if spec["lrn"] and i in (1, 2):
                x = local_response_norm(x)
            if i in (1, 2, 5):
                x = max_pool(x, 3, 2)
                self.sow("intermediates", f"pool{i}", x)
        if not self.include_top:
            return x
        x = flatten(adaptive_avg_pool(x, 6))
        for name in ("fc6", "fc7"):
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            x = nn.relu(nn.Dense(4096, dtype=self.dtype, name=name)(x))
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)


register_alias("alexnet", AlexNet)
register_alias("alexnet_original", functools.partial(AlexNet, variant="original"))
