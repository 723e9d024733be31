"""Which input pixels a decision depends on: gradients, deconvnet, guided backprop,
Grad-CAM, occlusion and integrated gradients.

Every method takes a plain function ``fn(images [B, H, W, C]) -> scores [B, K]``
(logits, probabilities, or a unit's activation at one position) and ``target [B]``,
the score to explain for each image; model weights are closed over. Nothing here
knows about Flax: build ``fn`` from any model, e.g.
``lambda x: model.apply(variables, x)``.

- :func:`gradient`: d score / d image (Simonyan et al. 2014); :func:`saliency_map` is
  its largest magnitude over channels.
- :func:`deconvnet`: Zeiler & Fergus (2014): the signal is sent back through the
  transposed filters and the max-pool switches, and every ReLU rectifies the
  *backward* signal (``relu(g)``), whatever the forward activation was.
- :func:`guided_backprop`: Springenberg et al. (2015): a ReLU passes the backward
  signal only where both the forward input and the signal are positive.
- :func:`grad_cam`: Selvaraju et al. (2017): the tap's channels weighted by the
  spatial mean of the score's gradient, summed and rectified.
- :func:`occlusion`: Zeiler & Fergus: the score with a grey square over each
  position, all positions batched in one jitted function.
- :func:`integrated_gradients`: Sundararajan et al. (2017), trapezoidal rule from a
  baseline; attributions sum to ``score(x) - score(baseline)`` (completeness).

ReLUs are found in the traced function (``jax.nn.relu`` / ``flax.linen.relu``, or
``max(x, 0)``) and replaced with the method's backward rule (see
:mod:`convjax.viz.rewrite`), so every model works unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from convjax.viz.rewrite import replace_relus, rewrite, with_offsets

ScoreFn = Callable[[jax.Array], jax.Array]


def _check(x: jax.Array, target: Any) -> tuple[jax.Array, jax.Array]:
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C]; got shape {tuple(x.shape)}")
    target = jnp.broadcast_to(jnp.asarray(target, jnp.int32), x.shape[:1])
    return x, target


def _picked(scores: jax.Array, target: jax.Array) -> jax.Array:
    """scores [B, K], target [B] -> [B]."""
    return jnp.take_along_axis(scores, target[:, None], axis=1)[:, 0]


def _input_gradient(fn: ScoreFn, x: jax.Array, target: jax.Array) -> jax.Array:
    return jax.grad(lambda x: jnp.sum(_picked(fn(x), target)))(x)


def gradient(fn: ScoreFn, x: jax.Array, target: Any) -> jax.Array:
    """d fn(x)[b, target[b]] / d x: [B, H, W, C] (vanilla backpropagation)."""
    x, target = _check(x, target)
    return jax.jit(_input_gradient, static_argnums=0)(fn, x, target)


def saliency_map(grad: jax.Array) -> jax.Array:
    """[B, H, W, C] gradient -> [B, H, W]: the largest magnitude over channels."""
    return jnp.max(jnp.abs(grad), axis=-1)


@jax.custom_vjp
def deconv_relu(x: jax.Array) -> jax.Array:
    """ReLU forward; backward rectifies the signal: ``relu(g)`` (Zeiler & Fergus)."""
    return jnp.maximum(x, 0)


deconv_relu.defvjp(lambda x: (jnp.maximum(x, 0), None), lambda _, g: (jnp.maximum(g, 0),))


@jax.custom_vjp
def guided_relu(x: jax.Array) -> jax.Array:
    """ReLU forward; backward ``g * (x > 0) * (g > 0)`` (Springenberg et al.)."""
    return jnp.maximum(x, 0)


guided_relu.defvjp(
    lambda x: (jnp.maximum(x, 0), x),
    lambda x, g: (jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g)),),
)


def deconvnet(fn: ScoreFn, x: jax.Array, target: Any) -> jax.Array:
    """The deconvnet projection of the target score onto the input: [B, H, W, C]."""
    x, target = _check(x, target)
    return jax.jit(_input_gradient, static_argnums=0)(
        rewrite(fn, replace_relus(deconv_relu)), x, target
    )


def guided_backprop(fn: ScoreFn, x: jax.Array, target: Any) -> jax.Array:
    """Guided backpropagation of the target score to the input: [B, H, W, C]."""
    x, target = _check(x, target)
    return jax.jit(_input_gradient, static_argnums=0)(
        rewrite(fn, replace_relus(guided_relu)), x, target
    )


def grad_cam(
    fn: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    x: jax.Array,
    target: Any,
    *,
    after_relu: bool = False,
    upsample: bool = True,
) -> tuple[jax.Array, jax.Array | None]:
    """Grad-CAM at a convolutional tap.

    Args:
      fn: ``images -> (scores [B, K], tap [B, h, w, c])``; the tap is any activation
        the scores are computed from (usually the last convolutional layer).
      x: images [B, H, W, C].
      target: [B] the score to explain.
      after_relu: use the rectified activation of a pre-activation tap (the ReLU that
        the model applies to it), as Grad-CAM intends: ``A = relu(tap)``, and the
        gradient with respect to that ``A``.

    Returns:
      ``(cam [B, h, w], upsampled [B, H, W] or None)``: ``relu(sum_k alpha_k A_k)``
      with ``alpha_k`` the mean over positions of ``d score / d A_k``; the upsampled
      map is bilinear, for overlaying on the image.
    """
    x, target = _check(x, target)

    def run(x, target):
        shifted = with_offsets(fn, after_relu=after_relu)
        scores, tap = shifted(x, jnp.zeros(jax.eval_shape(fn, x)[1].shape, x.dtype))
        if tap.ndim != 4:
            raise ValueError(f"the Grad-CAM tap must be [B, h, w, c]; got {tuple(tap.shape)}")
        grads = jax.grad(lambda d: jnp.sum(_picked(shifted(x, d)[0], target)))(jnp.zeros_like(tap))
        alpha = jnp.mean(grads, axis=(1, 2), keepdims=True)
        cam = jax.nn.relu(jnp.sum(alpha * tap, axis=-1))
        big = jax.image.resize(cam, (*x.shape[:3],), "bilinear") if upsample else None
        return cam, big

    return jax.jit(run)(x, target)


def occlusion(
    fn: ScoreFn,
    x: jax.Array,
    target: Any,
    *,
    size: int,
    stride: int,
    fill: float | jax.Array = 0.0,
    batch_size: int = 64,
) -> jax.Array:
    """The target score with a ``size x size`` square of ``fill`` at every position.

    Square corners are ``(i * stride, j * stride)`` for ``i < (H - size) // stride + 1``
    (likewise j). ``fill`` is a value or a per-channel [C] array (the dataset's grey
    after normalisation). Positions are evaluated ``batch_size`` at a time (all
    images together), in one jitted function. Returns [B, n_i, n_j].
    """
    x, target = _check(x, target)
    b, h, w, c = x.shape
    if not 1 <= size <= min(h, w) or stride < 1:
        raise ValueError(f"need 1 <= size <= {min(h, w)} and stride >= 1; got {size}, {stride}")
    ny, nx = (h - size) // stride + 1, (w - size) // stride + 1
    corners = np.stack(np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij"), -1)
    corners = corners.reshape(-1, 2) * stride
    chunk = max(1, min(batch_size, len(corners)))
    padded = np.concatenate([corners, np.zeros((-len(corners) % chunk, 2), corners.dtype)])
    fill = jnp.broadcast_to(jnp.asarray(fill, x.dtype), (c,))
    scores = _occlusion_scores(fn, x, target, jnp.asarray(padded).reshape(-1, chunk, 2), size, fill)
    return scores.reshape(-1, b)[: len(corners)].T.reshape(b, ny, nx)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _occlusion_scores(fn, x, target, corners, size, fill):
    """corners: [chunks, chunk, 2] -> scores [chunks, chunk, B]."""
    b, h, w, c = x.shape
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]

    def one_chunk(chunk):  # [n, 2]
        top, left = chunk[:, 0, None, None], chunk[:, 1, None, None]
        square = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
        occluded = jnp.where(square[:, None, :, :, None], fill, x[None])  # [n, B, H, W, C]
        scores = fn(occluded.reshape(-1, h, w, c))
        return _picked(scores, jnp.tile(target, chunk.shape[0])).reshape(-1, b)

    return jax.lax.map(one_chunk, corners)


def integrated_gradients(
    fn: ScoreFn,
    x: jax.Array,
    target: Any,
    *,
    baseline: jax.Array | float = 0.0,
    steps: int = 64,
    batch_size: int = 16,
) -> jax.Array:
    """Integrated gradients along the straight path from ``baseline`` to ``x``.

    ``(x - baseline) * integral_0^1 grad(baseline + a (x - baseline)) da`` by the
    trapezoidal rule on ``steps`` intervals, ``batch_size`` points at a time.
    Returns [B, H, W, C]; its sum per image approximates
    ``fn(x)[target] - fn(baseline)[target]``.
    """
    x, target = _check(x, target)
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    baseline = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
    alphas = np.linspace(0.0, 1.0, steps + 1)
    weights = np.full(steps + 1, 1.0 / steps)
    weights[[0, -1]] *= 0.5
    chunk = min(batch_size, steps + 1)
    pad = -len(alphas) % chunk
    alphas = np.concatenate([alphas, np.zeros(pad)]).reshape(-1, chunk)
    weights = np.concatenate([weights, np.zeros(pad)]).reshape(-1, chunk)
    total = _ig_sum(fn, x, target, baseline, jnp.asarray(alphas, x.dtype), jnp.asarray(weights))
    return (x - baseline) * total


@functools.partial(jax.jit, static_argnums=0)
def _ig_sum(fn, x, target, baseline, alphas, weights):
    """sum_i weight_i * grad(baseline + alpha_i (x - baseline)): [B, H, W, C]."""

    def one_chunk(carry, chunk):
        alpha, weight = chunk  # [n]
        path = baseline[None] + alpha[:, None, None, None, None] * (x - baseline)[None]
        n, b = path.shape[:2]
        grads = _input_gradient(fn, path.reshape(n * b, *x.shape[1:]), jnp.tile(target, n))
        grads = grads.reshape(n, b, *x.shape[1:])
        return carry + jnp.tensordot(weight.astype(grads.dtype), grads, axes=1), None

    total, _ = jax.lax.scan(one_chunk, jnp.zeros_like(x), (alphas, weights))
    return total
