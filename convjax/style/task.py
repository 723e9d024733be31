"""Style transfer as a task: what a batch of targets means for a generated image.

The optimised pytree is ``params = {'image': [N, H, W, C]}``, the N generated images
(C = 3, or 1 when only the luminance is transferred); it is replicated on every
device like any parameters. A batch row ``i`` carries what image ``index[i]`` must
match, precomputed once from the content and style images:

- ``index``: [b] int32, which generated image the row is about;
- ``content/<layer>``: [b, h, w, c] content activations at each content layer;
- ``gram/<layer>``: [b, c, c] target Gram matrix at each style layer;
- ``mask``: [b] (eval only), 1 for real rows.

So a batch of content images (or content/style pairs) is split over devices by the
generic train step exactly like a batch of examples: each device gathers its own
images, and the step's gradient average over devices delivers every image its own
gradient. The loss is the mean of the per-image costs over the global batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

from convjax.losses import style as costs
from convjax.style.color import gray_to_rgb
from convjax.style.features import FeatureNet
from convjax.tasks.base import Batch, EvalFn, LossFn


def content_key(layer: str) -> str:
    return f"content/{layer}"


def gram_key(layer: str) -> str:
    return f"gram/{layer}"


def network_input(images: jax.Array) -> jax.Array:
    """Generated images [B, H, W, 1|3] -> the RGB [B, H, W, 3] the network sees."""
    return gray_to_rgb(images) if images.shape[-1] == 1 else images


@dataclass(frozen=True)
class StyleTransferTask:
    """J(G) = alpha J_content + beta J_style + gamma TV, per generated image.

    content_layers / style_layers: layer -> weight (lambda_l); normalization: one of
    :data:`convjax.losses.style.NORMALIZATIONS`; tv_kind: ``'squared'`` or ``'abs'``.
    The TV term is per pixel (``reduction='mean'``), and the ``course`` normalisation
    makes both other terms independent of the image size too, so one set of weights
    serves every scale of a multi-scale run.
    """

    content_layers: Mapping[str, float] = field(default_factory=lambda: {"relu4_2": 1.0})
    style_layers: Mapping[str, float] = field(
        default_factory=lambda: {f"relu{i}_1": 0.2 for i in range(1, 6)}
    )
    content_weight: float = 1.0
    style_weight: float = 10.0
    tv_weight: float = 0.0
    normalization: str = "course"
    tv_kind: str = "squared"

    def __post_init__(self):
        costs.check_normalization(self.normalization)
        if self.tv_kind not in ("squared", "abs"):
            raise ValueError(f"Unknown tv_kind {self.tv_kind!r}; valid: squared, abs")
        if not self.style_layers:
            raise ValueError("style_layers must name at least one layer, e.g. {'relu1_1': 1.0}")

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.content_layers, *self.style_layers]))

    def costs(self, feature_net: FeatureNet, images: jax.Array, batch: Batch) -> dict:
        """images: [b, H, W, C] generated -> per-image costs {content, style, tv, total}: [b]."""
        features = feature_net(network_input(images))
        if self.content_layers:
            content = costs.weighted_layer_sum(
                {
                    layer: costs.content_cost(
                        batch[content_key(layer)], features[layer], self.normalization
                    )
                    for layer in self.content_layers
                },
                self.content_layers,
            )
        else:
            content = jnp.zeros(images.shape[:1], jnp.float32)
        grams = {layer: batch[gram_key(layer)] for layer in self.style_layers}
        style = costs.style_cost(grams, features, self.style_layers, self.normalization)
        tv = costs.total_variation_cost(images, self.tv_kind, reduction="mean")
        total = costs.total_cost(
            content, style, self.content_weight, self.style_weight, tv, self.tv_weight
        )
        return {"content": content, "style": style, "tv": tv, "total": total}

    def loss_fn(self, feature_net: FeatureNet) -> LossFn:
        def loss_fn(params, model_state, batch: Batch, rng):
            images = params["image"][batch["index"]]
            per_image = self.costs(feature_net, images, batch)
            metrics = {name: value.mean() for name, value in per_image.items()}
            return metrics["total"], (metrics, model_state)

        return loss_fn

    def eval_fn(self, feature_net: FeatureNet) -> EvalFn:
        def eval_fn(params, model_state, batch: Batch):
            images = params["image"][batch["index"]]
            per_image = self.costs(feature_net, images, batch)
            mask = batch["mask"].astype(jnp.float32)
            sums = {name: jnp.sum(value * mask) for name, value in per_image.items()}
            return {**sums, "count": jnp.sum(mask)}

        return eval_fn
