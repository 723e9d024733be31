"""Neural style transfer costs: content, Gram matrix, style, total variation, total.

Every function takes NHWC feature maps ``a: [B, H, W, C]`` (one generated image per
batch row) and returns one cost per example ``[B]``, so a batch of independent
images can be optimised at once and each image's gradient is its own.

Notation: for a layer with ``n_H x n_W`` positions and ``n_C`` channels, Gatys et al.
write ``N = n_C`` (filters) and ``M = n_H * n_W`` (positions). The Gram matrix is
unnormalised, ``G_kk' = sum_i sum_j a_ijk a_ijk'``, shape ``[B, n_C, n_C]``; each mode
puts its normalisation in the cost, never in the Gram matrix.

Normalisation modes, side by side (``S`` = style/content target, ``G`` = generated):

=========  ==========================================  ===========================================
mode       content cost J_content                       style cost per layer J_style^[l]
=========  ==========================================  ===========================================
gatys      1/2 * sum (a_C - a_G)^2                      1/(4 N^2 M^2) * sum (G_S - G_G)^2
course     1/(4 n_H n_W n_C) * sum (a_C - a_G)^2        1/(2 n_H n_W n_C)^2 * sum (G_S - G_G)^2
pytorch    1/(n_H n_W n_C) * sum (a_C - a_G)^2 (mean)   1/(N^4 M^2) * sum (G_S - G_G)^2
=========  ==========================================  ===========================================

- *gatys*: Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural
  Networks" (CVPR 2016), equations (1) and (4).
- *course*: deeplearning.ai's Convolutional Neural Networks course. Its style
  normalisation ``(2 n_H n_W n_C)^2 = 4 N^2 M^2`` is Gatys's, written differently; its
  content cost has the extra ``1/(4 n_H n_W n_C)``.
- *pytorch*: the PyTorch neural-style tutorial (and jcjohnson/neural-style): the Gram
  matrix divided by ``N * M`` (its ``a*b*c*d`` with batch 1) and then a mean squared
  error over the ``N^2`` entries, i.e. ``1/N^2 * sum ((G_S - G_G)/(N M))^2``; the
  content cost is ``F.mse_loss``, a mean over the ``n_H n_W n_C`` entries.

These magnitudes differ by orders of magnitude, so the weights alpha and beta that
give a good trade-off depend on the mode.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

NORMALIZATIONS = ("gatys", "course", "pytorch")


def check_normalization(normalization: str) -> None:
    """Raises ``ValueError`` naming the valid modes unless ``normalization`` is one."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"Unknown style-transfer normalization {normalization!r}; "
            f"valid: {', '.join(NORMALIZATIONS)}"
        )


def _check_features(a: jax.Array, what: str) -> None:
    if a.ndim != 4:
        raise ValueError(
            f"{what} must be NHWC feature maps [B, H, W, C]; got shape {tuple(a.shape)}"
        )


def gram_matrix(a: jax.Array) -> jax.Array:
    """Unnormalised Gram (style) matrix ``G_kk' = sum_ij a_ijk a_ijk'``.

    a: [B, H, W, C] -> [B, C, C], computed in float32.
    """
    _check_features(a, "gram_matrix input")
    a = a.astype(jnp.float32)
    return jnp.einsum("bhwc,bhwd->bcd", a, a, precision=jax.lax.Precision.HIGHEST)


def content_cost(
    content: jax.Array, generated: jax.Array, normalization: str = "gatys"
) -> jax.Array:
    """Content cost at one layer, per example.

    content, generated: [B, H, W, C] activations of the content and generated images
    -> [B]. ``normalization`` is one of :data:`NORMALIZATIONS` (see the module table).
    """
    check_normalization(normalization)
    _check_features(generated, "generated features")
    if content.shape != generated.shape:
        raise ValueError(
            f"content and generated features must have the same shape [B, H, W, C]; "
            f"got {tuple(content.shape)} and {tuple(generated.shape)}"
        )
    _, h, w, c = generated.shape
    diff = content.astype(jnp.float32) - generated.astype(jnp.float32)
    squared = jnp.sum(jnp.square(diff), axis=(1, 2, 3))
    scale = {"gatys": 0.5, "course": 1.0 / (4.0 * h * w * c), "pytorch": 1.0 / (h * w * c)}
    return scale[normalization] * squared


def style_layer_cost(
    style_gram: jax.Array, generated: jax.Array, normalization: str = "gatys"
) -> jax.Array:
    """Style cost at one layer, per example.

    style_gram: [B, C, C] target Gram matrix (:func:`gram_matrix` of the style image's
    activations, or a blend of several); generated: [B, H, W, C] activations of the
    generated image -> [B].
    """
    check_normalization(normalization)
    _check_features(generated, "generated features")
    _, h, w, c = generated.shape
    if style_gram.shape[-2:] != (c, c) or style_gram.ndim != 3:
        raise ValueError(
            f"style_gram must be [B, {c}, {c}] to match generated features "
            f"{tuple(generated.shape)}; got {tuple(style_gram.shape)}"
        )
    n, m = float(c), float(h * w)
    squared = jnp.sum(jnp.square(style_gram - gram_matrix(generated)), axis=(1, 2))
    scale = {
        "gatys": 1.0 / (4.0 * n**2 * m**2),
        "course": 1.0 / (2.0 * h * w * c) ** 2,
        "pytorch": 1.0 / (n**4 * m**2),
    }
    return scale[normalization] * squared


def weighted_layer_sum(costs: Mapping[str, jax.Array], weights: Mapping[str, float]) -> jax.Array:
    """``sum_l lambda_l * costs[l]`` over the layers named in ``weights``.

    costs: layer name -> [B] per-example cost; weights: layer name -> lambda_l.
    """
    missing = sorted(set(weights) - set(costs))
    if missing:
        raise ValueError(f"no cost for layer(s) {missing}; costs are for {sorted(costs)}")
    if not weights:
        raise ValueError("weights must name at least one layer")
    return sum(float(lam) * costs[name] for name, lam in weights.items())


def style_cost(
    style_grams: Mapping[str, jax.Array],
    generated: Mapping[str, jax.Array],
    layer_weights: Mapping[str, float],
    normalization: str = "gatys",
) -> jax.Array:
    """J_style = sum_l lambda_l J_style^[l], per example.

    style_grams: layer -> [B, C_l, C_l] targets; generated: layer -> [B, H_l, W_l, C_l]
    activations of the generated image; layer_weights: layer -> lambda_l. Returns [B].
    """
    costs = {
        name: style_layer_cost(style_grams[name], generated[name], normalization)
        for name in layer_weights
        if name in style_grams and name in generated
    }
    return weighted_layer_sum(costs, layer_weights)


def total_variation_cost(
    images: jax.Array, kind: str = "squared", reduction: str = "sum"
) -> jax.Array:
    """Total variation of images, per example: the sum over neighbouring pixels.

    images: [B, H, W, C] -> [B]. ``kind='squared'`` sums ``(x[i+1,j]-x[i,j])^2 +
    (x[i,j+1]-x[i,j])^2`` (smooth, the usual choice in style transfer); ``kind='abs'``
    sums the absolute differences (anisotropic TV). ``reduction='sum'`` grows with the
    image area; ``'mean'`` divides by the number of pixels ``H * W``, so one weight
    suits every image size.
    """
    _check_features(images, "total_variation_cost input")
    kinds = {"squared": jnp.square, "abs": jnp.abs}
    if kind not in kinds:
        raise ValueError(f"Unknown total variation kind {kind!r}; valid: {', '.join(kinds)}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"Unknown reduction {reduction!r}; valid: sum, mean")
    x = images.astype(jnp.float32)
    penalty = kinds[kind]
    dy = penalty(x[:, 1:, :, :] - x[:, :-1, :, :]).sum(axis=(1, 2, 3))
    dx = penalty(x[:, :, 1:, :] - x[:, :, :-1, :]).sum(axis=(1, 2, 3))
    total = dy + dx
    return total / (x.shape[1] * x.shape[2]) if reduction == "mean" else total


def total_cost(
    content: jax.Array,
    style: jax.Array,
    alpha: float,
    beta: float,
    tv: jax.Array | None = None,
    gamma: float = 0.0,
) -> jax.Array:
    """J(G) = alpha J_content + beta J_style (+ gamma TV); works on scalars or [B] arrays."""
    j = alpha * content + beta * style
    if tv is not None:
        j = j + gamma * tv
    return j
