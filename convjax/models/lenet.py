"""LeNet-5 (LeCun et al., 1998) and the course's simple ConvNet."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.models.blocks import POOLS, batch_norm
from convjax.models.checks import check_images
from convjax.models.layers import Conv
from convjax.models.registry import register

_ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh}


def _choice(table: dict[str, Any], key: str, what: str) -> Any:
    if key not in table:
        raise ValueError(f"Unknown {what} {key!r}; valid: {', '.join(sorted(table))}")
    return table[key]


@register("lenet5")
class LeNet5(nn.Module):
    """LeNet-5: 6@5x5 -> pool -> 16@5x5 -> pool -> 120 -> 84 -> classes.

    61,706 parameters on 32x32x1 inputs with 10 classes. ``activation`` is
    ``'relu'`` or the original ``'tanh'``; ``pool`` is ``'max'`` or the original
    ``'avg'``. ``batch_norm=True`` adds BatchNorm after each convolution
    (synchronised over ``axis_name`` when training data-parallel).
    """

    num_classes: int = 10
    activation: str = "relu"
    pool: str = "max"
    batch_norm: bool = False
    dtype: Any = jnp.float32
    axis_name: str | None = None
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: [B, H, W, C] with H, W >= 28 -> logits [B, num_classes]."""
        check_images(x, model="lenet5", min_size=28)
        act = _choice(_ACTIVATIONS, self.activation, "activation")
        pool = _choice(POOLS, self.pool, "pool")
        x = x.astype(self.dtype)
        for i, features in enumerate((6, 16)):
            x = Conv(
                features,
                (5, 5),
                padding="VALID",
                dtype=self.dtype,
                conv_impl=self.conv_impl,
                name=f"conv{i + 1}",
            )(x)
            if self.batch_norm:
                x = batch_norm(train, self.axis_name, self.dtype, f"bn{i + 1}")(x)
            x = pool(act(x), 2, 2)
        x = x.reshape((x.shape[0], -1))
        x = act(nn.Dense(120, dtype=self.dtype, name="fc1")(x))
        x = act(nn.Dense(84, dtype=self.dtype, name="fc2")(x))
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="logits")(x)
        return x.astype(jnp.float32)


@register("simple_convnet")
class SimpleConvNet(nn.Module):
    """The course's simple ConvNet.

    39x39x3 -> 10 filters 3x3 s1 -> 37x37x10 -> 20 filters 5x5 s2 -> 17x17x20
    -> 40 filters 5x5 s2 -> 7x7x40 -> flatten 1,960 -> softmax over classes.
    """

    num_classes: int = 10
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: [B, H, W, C] (39x39x3 in the course) -> logits [B, num_classes]."""
        check_images(x, model="simple_convnet", min_size=15)
        x = x.astype(self.dtype)
        for i, (features, size, stride) in enumerate(((10, 3, 1), (20, 5, 2), (40, 5, 2))):
            x = Conv(
                features,
                (size, size),
                strides=stride,
                padding="VALID",
                dtype=self.dtype,
                conv_impl=self.conv_impl,
                name=f"conv{i + 1}",
            )(x)
            x = nn.relu(x)
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="logits")(x).astype(jnp.float32)
