"""A frozen VGG feature network (style transfer's): the model zoo's VGG with Gatys names.

Layers are the zoo VGG's taps (:mod:`convjax.models.taps`): ``conv1_1 ... conv5_4``
(before the ReLU), ``relu1_1 ... relu5_4`` and ``pool1 ... pool5``. Gatys et al.'s
"conv4_2" is the rectified response (Caffe's in-place ReLU), i.e. ``relu4_2`` here.

Two modes, and the network says which one it runs in (:attr:`FeatureNet.description`):

- *pretrained*: ImageNet VGG weights exported from torchvision and converted by the
  model zoo's converter (see docs/style_transfer.md for the one-liner that exports them).
- *random*: no weights file (the offline default). The RGB layer gets
  :func:`natural_first_layer` filters (random luminance patterns plus locally
  constant random chroma); every deeper kernel is He-normal on the **fan-in**
  (variance ``2 / (3 * 3 * C_in)``), biases are zero, so activations keep their scale
  through all 16 ReLU layers instead of shrinking at every widening stage (the zoo's
  torchvision-style fan-out initialisation shrinks them ~6x by ``relu5_1``). Random
  multi-scale filters still capture texture statistics (Ustyuzhaninov et al., 2017;
  He et al., 2016), so style transfer works, with cruder textures than ImageNet
  features give.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from convjax.models.convert import load_torchvision
from convjax.models.registry import get_model
from convjax.models.taps import check_layers, extract_features

PyTree = Any

ARCHS = ("vgg16", "vgg19")
POOLS = ("avg", "max")
# ImageNet statistics of torchvision's VGG weights, for RGB in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The smallest input the VGG taps accept (five 2x2 pools).
MIN_SIZE = 32


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureNet:
    """A frozen network mapping images to named activations.

    ``feature_net(images)``: images [B, H, W, 3] RGB in [0, 1] -> ``{layer: [B, h, w, c]}``
    for every layer in ``layers``. The variables are closed over: nothing here is
    trained, and gradients flow only to the images.
    """

    model: nn.Module
    variables: PyTree
    layers: tuple[str, ...]
    arch: str
    pool: str
    pretrained: bool
    description: str

    def preprocess(self, images: jax.Array) -> jax.Array:
        """RGB in [0, 1] -> the network's input (ImageNet mean/std normalisation)."""
        mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
        std = jnp.asarray(IMAGENET_STD, jnp.float32)
        return (images - mean) / std

    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"the feature network expects RGB images [B, H, W, 3]; got {tuple(images.shape)}"
            )
        if min(images.shape[1:3]) < MIN_SIZE:
            raise ValueError(
                f"the feature network needs images of at least {MIN_SIZE}x{MIN_SIZE}; "
                f"got {tuple(images.shape)}"
            )
        return extract_features(self.model, self.variables, self.preprocess(images), self.layers)


def natural_first_layer(
    shape: Sequence[int], rng: np.random.Generator, colour_gain: float = 3.0
) -> np.ndarray:
    """A random first-layer kernel [kh, kw, 3, C_out] shaped like what ImageNet nets learn.

    Each filter is a random *luminance* pattern (the same spatial weights on R, G and
    B) plus a random *chroma* (a colour with zero mean over the channels) that is
    constant over the window, ``colour_gain`` times stronger (chroma varies about 3x
    less than luminance in natural images, so this puts colour on an equal footing).

    Why: with i.i.d. Gaussian RGB filters the optimiser fills the image with red/green
    pixel noise that matches random-feature Grams but looks nothing like the style.
    Here colour is seen only through local averages, so the gradient that reaches
    the image has no high-frequency chroma, while the style's palette is still
    matched through the chroma features.
    """
    kh, kw, cin, cout = shape
    scale = np.sqrt(1.0 / (kh * kw * cin))
    lum = rng.standard_normal((kh, kw, 1, cout)) * scale
    chroma = rng.standard_normal((1, 1, cin, cout)) * scale
    chroma = colour_gain * (chroma - chroma.mean(axis=2, keepdims=True))
    return (np.repeat(lum, cin, axis=2) + chroma).astype(np.float32)


def random_vgg_variables(model: nn.Module, seed: int = 0) -> PyTree:
    """Random weights for ``model``: :func:`natural_first_layer` for the RGB layer,
    He-normal fan-in kernels for every other convolution, zero biases.

    The shapes come from ``jax.eval_shape`` (nothing is run); kernels are HWIO.
    """
    shapes = jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, MIN_SIZE, MIN_SIZE, 3), jnp.float32)
    )
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    rng = np.random.default_rng(seed)
    values = []
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path)
        if name.endswith("['kernel']") and leaf.shape[2] == 3:
            values.append(natural_first_layer(leaf.shape, rng))
        elif name.endswith("['kernel']"):
            fan_in = int(np.prod(leaf.shape[:-1]))
            values.append(rng.standard_normal(leaf.shape, np.float32) * np.sqrt(2.0 / fan_in))
        else:
            values.append(np.zeros(leaf.shape, leaf.dtype))
    return jax.tree.unflatten(treedef, [jnp.asarray(v) for v in values])


def stages_needed(stage_sizes: Sequence[int], layers: Sequence[str]) -> tuple[int, ...]:
    """The convolutions per stage that ``layers`` depend on: the network is cut after
    the deepest tap, so nothing past it is built, initialised or closed over.

    Earlier layers keep their names, shapes and torchvision indices.
    """
    needed = [0] * len(stage_sizes)
    for layer in layers:
        match = re.fullmatch(r"(?:conv|relu)(\d)_(\d)|pool(\d)", layer)
        if match is None:
            return tuple(stage_sizes)
        stage = int(match.group(1) or match.group(3))
        convs = int(match.group(2)) if match.group(2) else stage_sizes[stage - 1]
        for s in range(stage - 1):
            needed[s] = stage_sizes[s]
        needed[stage - 1] = max(needed[stage - 1], convs)
    return tuple(needed)


def build_feature_net(
    layers: Sequence[str],
    arch: str = "vgg19",
    pool: str = "avg",
    weights: str | None = None,
    seed: int = 0,
) -> FeatureNet:
    """The frozen VGG feature network for ``layers``.

    Args:
      layers: tap names (e.g. ``relu1_1``, ``relu4_2``); unknown names raise a
        ``ValueError`` that lists the valid ones.
      arch: ``'vgg19'`` or ``'vgg16'``.
      pool: ``'avg'`` (Gatys et al.'s choice for synthesis) or ``'max'``.
      weights: a torchvision VGG export (``.safetensors`` or ``.npz``) converted by the
        model zoo; ``None`` or ``''`` builds the random-weight network.
      seed: seed of the random weights.
    """
    if arch not in ARCHS:
        raise ValueError(f"Unknown feature network {arch!r}; valid: {', '.join(ARCHS)}")
    if pool not in POOLS:
        raise ValueError(f"Unknown pooling {pool!r}; valid: {', '.join(POOLS)}")
    layers = tuple(dict.fromkeys(layers))
    full = get_model(arch, include_top=False, pool=pool)
    check_layers(full, jnp.zeros((1, MIN_SIZE, MIN_SIZE, 3)), layers)
    model = full.clone(stage_sizes=stages_needed(full.stage_sizes, layers))
    name = {"vgg16": "VGG-16", "vgg19": "VGG-19"}[arch]
    if weights:
        variables = load_pretrained_variables(model, weights)
        description = f"pretrained {name} ({pool} pooling) from {weights}"
        pretrained = True
    else:
        variables = random_vgg_variables(model, seed)
        description = (
            f"random-weight {name} ({pool} pooling, He fan-in init, seed {seed}): "
            "no pretrained weights given, so textures come from random filters"
        )
        pretrained = False
    return FeatureNet(model, variables, layers, arch, pool, pretrained, description)


def load_pretrained_variables(model: nn.Module, path: str) -> PyTree:
    """Variables of the headless ``model`` from a torchvision VGG export
    (``.safetensors`` / ``.npz``), via the model zoo's converter; the classifier's
    weights in the file are ignored."""
    variables = load_torchvision(model, path, strict=False)
    return jax.tree.map(jnp.asarray, variables)
