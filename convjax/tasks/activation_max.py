"""Activation maximisation as a task: the optimised pytree is an image, not weights.

As in neural style transfer, ``params = {'image': [N, H, W, C]}`` holds N images,
each optimised for its own unit; the network is frozen and closed over in the
"model" the hooks receive, a :data:`FeatureFn` ``images -> {layer: activation}``
(:func:`frozen_features` builds one from any zoo model and its variables). A batch
row says which image and which unit:

- ``index``: [b] int32, the image (row of ``params['image']``);
- ``unit``: [b] int32, the channel (or logit) to maximise;
- ``mask``: [b] (eval only), 1 for real rows.

Loss per image: ``-a(T(x)) + l2_weight * mean(x^2) + tv_weight * TV(x)`` where
``a`` is the unit's activation (the centre position for ``objective='neuron'``, the
mean over positions for ``'channel'``) and ``T`` a random jitter / scale / rotation
drawn from the step's key (Olah et al. 2017). The eval step reports the activation
of the untransformed image. So the generic train step (any strategy) does the
optimisation: ``strategy.compile_train_step(task.loss_fn(features))``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from convjax.losses.style import total_variation_cost
from convjax.models.taps import check_layers, extract_features
from convjax.style.optimizers import keep_in_range
from convjax.tasks.base import EvalFn, LossFn, OptimizerFactory, Task
from convjax.tasks.pixels import ImageTerms, pixel_eval_fn, pixel_loss_fn
from convjax.tasks.registry import register_task
from convjax.viz.activation_max import OBJECTIVES, l2_penalty, random_transform, unit_activation

FeatureFn = Callable[[jax.Array], Mapping[str, jax.Array]]


def frozen_features(
    model: nn.Module, variables: Any, layer: str, input_shape: Sequence[int]
) -> FeatureFn:
    """``images -> {layer: activation}`` for ``model`` with fixed ``variables``.

    ``layer`` is checked against the model's taps for inputs ``input_shape``
    ``[B, H, W, C]`` (an unknown name lists the valid ones).
    """
    check_layers(model, jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32), [layer])

    def features(images: jax.Array) -> Mapping[str, jax.Array]:
        return extract_features(model, variables, images, [layer])

    return features


@register_task("activation_max")
@dataclass(frozen=True)
class ActivationMaxTask(Task):
    """Maximise one unit of ``layer`` per image (see the module docstring).

    Attributes:
      layer: a tap of the network (``'conv2'``, ``'relu4_2'``, ``'output'`` for logits).
      objective: ``'neuron'`` (centre position) or ``'channel'`` (mean over positions).
      l2_weight / tv_weight: weights of the L2 and (squared, per-pixel) TV penalties.
      jitter: largest random shift in pixels; scales / angles (degrees): random choices.
      pixel_range: ``(low, high)`` every pixel is kept in (a projection after each
        update), e.g. the normalised image of [0, 1] pixels; ``None`` for no bound.
    """

    layer: str = "output"
    objective: str = "neuron"
    l2_weight: float = 1e-3
    tv_weight: float = 0.05
    jitter: int = 2
    scales: tuple[float, ...] = (0.95, 0.975, 1.0, 1.025, 1.05)
    angles: tuple[float, ...] = (-5.0, -2.5, 0.0, 2.5, 5.0)
    pixel_range: tuple[float, float] | None = None

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"Unknown objective {self.objective!r}; valid: {', '.join(OBJECTIVES)}"
            )
        if self.jitter < 0 or not self.scales or not self.angles:
            raise ValueError("jitter must be >= 0 and scales / angles non-empty")

    def make_optimizer(
        self,
        optimizer_config: Mapping[str, Any],
        num_steps: int,
        build: OptimizerFactory,
    ) -> optax.GradientTransformation:
        """``build``'s optimizer, then a projection into ``pixel_range`` when set."""
        tx = build(optimizer_config, num_steps)
        return tx if self.pixel_range is None else optax.chain(tx, keep_in_range(*self.pixel_range))

    def costs(
        self, features: FeatureFn, images: jax.Array, unit: jax.Array, rng: jax.Array | None
    ) -> dict[str, jax.Array]:
        """images [b, H, W, C], unit [b] -> per-image terms {activation, l2, tv, total}: [b]."""
        seen = images
        if rng is not None:
            seen = random_transform(
                images, rng, jitter=self.jitter, scales=self.scales, angles=self.angles
            )
        activation = unit_activation(features(seen)[self.layer], unit, self.objective)
        l2 = l2_penalty(images)
        tv = total_variation_cost(images, "squared", reduction="mean")
        total = -activation + self.l2_weight * l2 + self.tv_weight * tv
        return {"activation": activation, "l2": l2, "tv": tv, "total": total}

    def _terms(self, features: FeatureFn) -> ImageTerms:
        return lambda images, batch, rng: self.costs(features, images, batch["unit"], rng)

    def loss_fn(self, features: FeatureFn) -> LossFn:
        return pixel_loss_fn(self._terms(features))

    def eval_fn(self, features: FeatureFn) -> EvalFn:
        return pixel_eval_fn(self._terms(features))
