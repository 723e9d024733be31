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

The "model" the task's hooks receive is the frozen feature network
(:class:`convjax.models.features.FeatureNet`); :func:`build_batch` makes the batch of
targets from content and style images. ``get_task('style_transfer', ...)`` builds one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from convjax.losses import style as costs
from convjax.models.features import FeatureNet
from convjax.style.color import gray_to_rgb
from convjax.style.optimizers import keep_in_range, safeguarded_lbfgs
from convjax.tasks.base import Batch, EvalFn, LossFn, OptimizerFactory, Task
from convjax.tasks.pixels import ImageTerms, pixel_eval_fn, pixel_loss_fn
from convjax.tasks.registry import register_task

COST_NAMES = ("content", "style", "tv", "total")


def content_key(layer: str) -> str:
    """The batch key of the content activations at ``layer``."""
    return f"content/{layer}"


def gram_key(layer: str) -> str:
    """The batch key of the target Gram matrices at ``layer``."""
    return f"gram/{layer}"


def network_input(images: jax.Array) -> jax.Array:
    """Generated images [B, H, W, 1|3] -> the RGB [B, H, W, 3] the network sees."""
    return gray_to_rgb(images) if images.shape[-1] == 1 else images


@register_task("style_transfer")
@dataclass(frozen=True)
class StyleTransferTask(Task):
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

    def make_optimizer(
        self,
        optimizer_config: Mapping[str, Any],
        num_steps: int,
        build: OptimizerFactory,
    ) -> optax.GradientTransformation:
        """The optimizer of the pixels, followed by
        :func:`~convjax.style.optimizers.keep_in_range` (pixels stay in [0, 1]).

        ``name='lbfgs'`` is :func:`~convjax.style.optimizers.safeguarded_lbfgs`: no line
        search, a fixed step ``learning_rate`` (1.0 is the classic choice, as in
        PyTorch's and Torch7's L-BFGS used by the PyTorch tutorial and
        jcjohnson/neural-style), ``memory_size`` and ``max_step`` from the config. A
        line search needs the objective inside ``tx.update``, which the generic step
        does not pass: under ``pmap``/``shard_map`` each device would evaluate only
        its own images and the replicated parameters would drift apart. Every other
        name goes to ``build`` (:func:`convjax.train.optimizers.make_optimizer`).
        """
        if optimizer_config["name"] == "lbfgs":
            tx = safeguarded_lbfgs(
                float(optimizer_config["learning_rate"]),
                memory_size=int(optimizer_config.get("memory_size", 10) or 10),
                max_step=float(optimizer_config.get("max_step", 0.05) or 0.05),
            )
        else:
            tx = build(optimizer_config, num_steps)
        return optax.chain(tx, keep_in_range(0.0, 1.0))

    def _terms(self, feature_net: FeatureNet) -> ImageTerms:
        return lambda images, batch, rng: self.costs(feature_net, images, batch)

    def loss_fn(self, feature_net: FeatureNet) -> LossFn:
        return pixel_loss_fn(self._terms(feature_net))

    def eval_fn(self, feature_net: FeatureNet) -> EvalFn:
        return pixel_eval_fn(self._terms(feature_net))


def build_batch(
    feature_net: FeatureNet,
    task: StyleTransferTask,
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    weights: np.ndarray,
    pair_styles: bool,
) -> dict[str, np.ndarray]:
    """The constant batch of targets (see the module docstring).

    content: [N, H, W, C] what the network sees of each content image (C = 1 for
    luminance); styles: S images [H_s, W_s, C]; ``pair_styles`` gives content ``i``
    style ``i``, otherwise every content gets the blend of all styles with
    ``weights: [S]``. Style Gram matrices are rescaled to the generated image's number
    of positions (``G_S * M_G / M_S``), so a style image of another size
    (``style_scale``) asks for the same statistics per position.
    """
    extract = jax.jit(lambda x: feature_net(network_input(x)))
    content_features = {k: np.asarray(v) for k, v in extract(jnp.asarray(content)).items()}
    n = content.shape[0]
    batch: dict[str, np.ndarray] = {"index": np.arange(n, dtype=np.int32)}
    for layer in task.content_layers:
        batch[content_key(layer)] = content_features[layer]

    def per_position_grams(style: np.ndarray) -> dict[str, np.ndarray]:
        feats = extract(jnp.asarray(style)[None])
        out = {}
        for layer in task.style_layers:
            m_style = feats[layer].shape[1] * feats[layer].shape[2]
            m_generated = content_features[layer].shape[1] * content_features[layer].shape[2]
            out[layer] = np.asarray(costs.gram_matrix(feats[layer])[0]) * (m_generated / m_style)
        return out

    style_grams = [per_position_grams(s) for s in styles]
    for layer in task.style_layers:
        if pair_styles:
            grams = np.stack([g[layer] for g in style_grams])
        else:
            blended = sum(w * g[layer] for w, g in zip(weights, style_grams, strict=True))
            grams = np.broadcast_to(blended, (n, *blended.shape))
        batch[gram_key(layer)] = np.ascontiguousarray(grams, np.float32)
    return batch
