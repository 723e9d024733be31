"""Activation maximisation pieces: random image transforms, the objective, the L2 term.

Simonyan et al. (2014) find an input that maximises a class score by gradient ascent
with an L2 penalty; Olah et al. ("Feature Visualization", Distill 2017) make such
images far less noisy by optimising through small random jitter, scaling and
rotation at every step (transformation robustness) and penalising total variation.
The optimisation itself runs through the generic train step
(:class:`convjax.tasks.activation_max.ActivationMaxTask`); here are its array pieces.
"""

from __future__ import annotations

from collections.abc import Sequence

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

OBJECTIVES = ("neuron", "channel")


def _affine(angle: jax.Array, scale: jax.Array, shift: jax.Array, centre: np.ndarray) -> jax.Array:
    """4x4 homogeneous map from output (y, x, c) to input coordinates: rotate by
    ``angle`` (radians) and scale by ``scale`` about ``centre``, then move by ``shift``."""
    cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
    inverse = jnp.array([[cos, sin], [-sin, cos]])
    offset = jnp.asarray(centre) - inverse @ jnp.asarray(centre) - shift
    matrix = jnp.eye(4)
    matrix = matrix.at[:2, :2].set(inverse)
    return matrix.at[:2, 3].set(offset)


def random_transform(
    images: jax.Array,
    rng: jax.Array,
    *,
    jitter: int = 0,
    scales: Sequence[float] = (1.0,),
    angles: Sequence[float] = (0.0,),
) -> jax.Array:
    """images [B, H, W, C] -> each moved by a random integer shift in
    ``[-jitter, jitter]`` pixels, scaled by a random one of ``scales`` and rotated by a
    random one of ``angles`` (degrees) about its centre; bilinear, reflecting at the
    borders, differentiable in the images."""
    b, h, w, _ = images.shape
    k_shift, k_scale, k_angle = jax.random.split(rng, 3)
    shift = jax.random.randint(k_shift, (b, 2), -jitter, jitter + 1).astype(jnp.float32)
    scale = jax.random.choice(k_scale, jnp.asarray(scales, jnp.float32), (b,))
    angle = jax.random.choice(k_angle, jnp.deg2rad(jnp.asarray(angles, jnp.float32)), (b,))
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0], np.float32)

    def one(image, angle, scale, shift):
        matrix = _affine(angle, scale, shift, centre)
        return dm_pix.affine_transform(image, matrix, order=1, mode="reflect")

    return jax.vmap(one)(images, angle, scale, shift)


def unit_activation(act: jax.Array, unit: jax.Array, objective: str = "neuron") -> jax.Array:
    """The activation to maximise, per image: [B].

    act: [B, K] (a dense layer or the logits: ``act[b, unit[b]]``) or [B, h, w, K]:
    ``'neuron'`` is the unit at the centre position, ``'channel'`` its mean over positions.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"Unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    unit = jnp.asarray(unit, jnp.int32)
    if act.ndim == 2:
        return jnp.take_along_axis(act, unit[:, None], axis=1)[:, 0]
    if act.ndim != 4:
        raise ValueError(f"activations must be [B, K] or [B, h, w, K]; got {tuple(act.shape)}")
    if objective == "neuron":
        act = act[:, act.shape[1] // 2, act.shape[2] // 2]
    else:
        act = jnp.mean(act, axis=(1, 2))
    return jnp.take_along_axis(act, unit[:, None], axis=1)[:, 0]


def l2_penalty(images: jax.Array) -> jax.Array:
    """Mean squared pixel per image: [B, H, W, C] -> [B]."""
    return jnp.mean(jnp.square(images), axis=(1, 2, 3))
