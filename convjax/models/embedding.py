"""Embedding networks for faces: any zoo backbone -> a d-dim L2-normalised embedding.

- ``embedding``: :class:`EmbeddingNet`, a registered backbone whose classifier
  layer becomes a projection to ``embed_dim`` outputs (FaceNet's 128 by default),
  followed by L2 normalisation. A Siamese pair is the same module applied to both
  images (shared parameters); ``d(x1, x2) = ||f(x1) - f(x2)||^2``.
- ``verification_head``: :class:`VerificationHead`, the course's binary classifier
  ``y = sigmoid(sum_k w_k |f_i,k - f_j,k| + b)`` (or the chi-square variant
  ``sum_k w_k (f_i,k - f_j,k)^2 / (|f_i,k| + |f_j,k|)``) on a pair of embeddings,
  e.g. precomputed ones. It returns the logit; the sigmoid is in the loss.
- ``siamese_verifier``: :class:`SiameseVerifier`, both together on image pairs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.models.checks import check_images
from convjax.models.registry import get_model_constructor, register

HEAD_KINDS = ("l1", "chi2")


def l2_normalise(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x: [B, D] -> rows scaled to unit L2 norm (in float32)."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


def _accepted_fields(ctor: Any) -> set[str]:
    """Dataclass fields of a registered model class (or of a partial of one)."""
    target = getattr(ctor, "func", ctor)
    return (
        {f.name for f in dataclasses.fields(target)} if dataclasses.is_dataclass(target) else set()
    )


@register("embedding")
class EmbeddingNet(nn.Module):
    """``backbone`` (any registered model name) with its classifier output resized to
    ``embed_dim``, then L2-normalised: images [B, H, W, C] -> embeddings [B, embed_dim].

    ``backbone_kwargs`` go to the backbone (e.g. ``{'batch_norm': True}`` for lenet5);
    ``dtype``, ``axis_name`` and ``conv_impl`` are passed on when the backbone has them.
    """

    backbone: str = "lenet5"
    backbone_kwargs: dict | None = None
    embed_dim: int = 128
    normalise: bool = True
    dtype: Any = jnp.float32
    axis_name: str | None = None
    conv_impl: str = "auto"

    @property
    def num_classes(self) -> int:  # the output width, as for every zoo model
        return self.embed_dim

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: [B, H, W, C] -> [B, embed_dim] float32, unit norm when ``normalise``."""
        check_images(x, model=f"embedding({self.backbone})")
        ctor = get_model_constructor(self.backbone)
        fields = _accepted_fields(ctor)
        kwargs = dict(self.backbone_kwargs or {})
        if "num_classes" not in fields:
            raise ValueError(
                f"backbone {self.backbone!r} has no num_classes output layer to project to "
                f"the embedding; pick a classifier from the model zoo."
            )
        kwargs["num_classes"] = self.embed_dim
        for name in ("dtype", "axis_name", "conv_impl"):
            if name in fields and name not in kwargs:
                kwargs[name] = getattr(self, name)
        features = ctor(**kwargs, name="backbone")(x, train=train)
        if features.ndim != 2 or features.shape[-1] != self.embed_dim:
            raise ValueError(
                f"backbone {self.backbone!r} returned shape {features.shape}; expected "
                f"[B, {self.embed_dim}]"
            )
        return l2_normalise(features) if self.normalise else features.astype(jnp.float32)


@register("verification_head")
class VerificationHead(nn.Module):
    """Logistic regression on a pair of embeddings: pair [B, 2, D] -> logits [B].

    ``kind='l1'``: features ``|f_i - f_j|``; ``kind='chi2'``:
    ``(f_i - f_j)^2 / (|f_i| + |f_j| + eps)`` (DeepFace's chi-square similarity,
    written with absolute values because these embeddings can be negative).
    """

    kind: str = "l1"
    eps: float = 1e-6

    @nn.compact
    def __call__(self, pair: jax.Array, train: bool = False) -> jax.Array:
        if self.kind not in HEAD_KINDS:
            raise ValueError(
                f"Unknown verification head {self.kind!r}; valid: {', '.join(HEAD_KINDS)}"
            )
        if pair.ndim != 3 or pair.shape[1] != 2:
            raise ValueError(
                f"verification_head expects a pair of embeddings [B, 2, D]; got {tuple(pair.shape)}"
            )
        f_i, f_j = pair[:, 0].astype(jnp.float32), pair[:, 1].astype(jnp.float32)
        if self.kind == "l1":
            features = jnp.abs(f_i - f_j)
        else:
            features = jnp.square(f_i - f_j) / (jnp.abs(f_i) + jnp.abs(f_j) + self.eps)
        return nn.Dense(1, name="logit")(features)[:, 0]


@register("siamese_verifier")
class SiameseVerifier(nn.Module):
    """One :class:`EmbeddingNet` on both images, then :class:`VerificationHead`.

    pairs [B, 2, H, W, C] -> same-identity logits [B]; ``embed`` gives the
    embeddings of single images [B, H, W, C] -> [B, embed_dim].
    """

    backbone: str = "lenet5"
    backbone_kwargs: dict | None = None
    embed_dim: int = 128
    kind: str = "l1"
    dtype: Any = jnp.float32
    axis_name: str | None = None
    conv_impl: str = "auto"

    def setup(self):
        self.embedder = EmbeddingNet(
            self.backbone,
            self.backbone_kwargs,
            self.embed_dim,
            True,
            self.dtype,
            self.axis_name,
            self.conv_impl,
        )
        self.head = VerificationHead(self.kind)

    def embed(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.embedder(x, train=train)

    def __call__(self, pairs: jax.Array, train: bool = False) -> jax.Array:
        if pairs.ndim != 5 or pairs.shape[1] != 2:
            raise ValueError(
                f"siamese_verifier expects image pairs [B, 2, H, W, C]; got {tuple(pairs.shape)}"
            )
        b = pairs.shape[0]
        embeddings = self.embedder(pairs.reshape(2 * b, *pairs.shape[2:]), train=train)
        return self.head(embeddings.reshape(b, 2, -1))
