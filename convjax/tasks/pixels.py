"""The loss and eval functions of a task whose parameters are images.

``params['image']: [N, H, W, C]`` holds every image being optimised (activation
maximisation, style transfer); a batch picks its rows with ``batch['index']: [b]``.
The task gives its per-image terms; the loss is the batch mean of ``'total'``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax

from convjax.tasks.base import Batch, EvalFn, LossFn, masked_sums

# (images [b, H, W, C], batch, rng or None in eval) -> per-image terms, each [b], with 'total'
ImageTerms = Callable[[jax.Array, Batch, jax.Array | None], Mapping[str, jax.Array]]


def pixel_loss_fn(terms: ImageTerms) -> LossFn:
    """A ``loss_fn`` minimising the batch mean of the per-image ``'total'``; every term's
    batch mean is a metric. The model state passes through unchanged."""

    def loss_fn(params, model_state, batch: Batch, rng):
        images = params["image"][batch["index"]]
        metrics = {name: value.mean() for name, value in terms(images, batch, rng).items()}
        return metrics["total"], (metrics, model_state)

    return loss_fn


def pixel_eval_fn(terms: ImageTerms) -> EvalFn:
    """An ``eval_fn``: the per-image terms (no random transform) summed over the valid
    rows with :func:`~convjax.tasks.base.masked_sums`."""

    def eval_fn(params, model_state, batch: Batch):
        images = params["image"][batch["index"]]
        return masked_sums(terms(images, batch, None), batch["mask"])

    return eval_fn
