"""Data augmentation as pure JAX functions with explicit keys (jit- and vmap-able).

An augmentation is a list of ops, written in a config as a string or a list::

    config.dataset.augment = "mirror, random_crop(pad=4), rotate(degrees=10), colour_shift(0.1)"
    config.dataset.augment = ["random_resized_crop(scale=(0.25, 1.0))", "mirror", "pca_lighting"]

Geometric ops (each draws a forward matrix, see :mod:`convjax.data.geometry`):

- ``mirror(p=0.5)``: left-right flip with probability ``p``; landmarks are also
  re-indexed by ``landmark_flip_permutation`` (left eye <-> right eye).
- ``random_crop(pad=4)``: the padded random crop of CIFAR training: shifts content by
  integers in [-pad, pad] with zero fill; the output keeps the input size.
- ``random_resized_crop(scale=(0.08, 1.0), ratio=(3/4, 4/3))``: Inception's crop of a
  random area fraction and aspect ratio, resized to the input size.
- ``rotate(degrees=15)``, ``shear(degrees=10)``, ``zoom(lower=0.9, upper=1.1)``:
  uniform in the range, about the image centre.

All geometric ops of a list compose into one matrix, so the image is resampled once
(bilinear, zero fill), before the colour ops; ``boxes`` and ``landmarks`` in the
example move with it.

Colour ops (:mod:`convjax.data.colour`; images stay in 0..1): ``colour_shift(delta=0.1)``
(per-channel offsets), ``pca_lighting(std=0.1, eigen='imagenet')`` (AlexNet lighting;
``eigen='data'`` uses the dataset's own RGB eigenvectors), ``brightness(delta=0.2)``,
``contrast(lower=0.8, upper=1.2)``, ``saturation(lower=0.8, upper=1.2)``, ``hue(delta=0.05)``.
They run in the listed order.

:func:`make_augment` returns ``augment(key, example) -> example`` for one example
(``image`` float [H, W, C] in 0..1, optional ``boxes`` [N, 4] and ``landmarks``
[..., K, 2] normalised); :func:`make_batch_augment` the same over a batch, one key
per example. Both are pure, so they run inside a jitted train step on device as well
as in the input pipeline (``convjax.data.pipeline`` applies ``dataset.augment`` to
training batches unless ``dataset.augment_in_pipeline`` is False).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from convjax.data import colour, geometry
from convjax.data.calls import parse_call

Example = dict[str, jax.Array]


def random_mirror(key, height: int, width: int, p: float = 0.5):
    flipped = jax.random.bernoulli(key, float(p))
    forward = jnp.where(flipped, geometry.flip_matrix(height, width), geometry.identity_matrix())
    return forward, flipped


def random_crop(key, height: int, width: int, pad: int = 4):
    dy, dx = jax.random.randint(key, (2,), -pad, pad + 1).astype(jnp.float32)
    return geometry.translation_matrix(dy, dx), jnp.array(False)


def random_resized_crop(
    key,
    height: int,
    width: int,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    attempts: int = 10,
):
    area_key, ratio_key, top_key, left_key = jax.random.split(key, 4)
    area = jax.random.uniform(area_key, (attempts,), minval=scale[0], maxval=scale[1])
    log_ratio = jax.random.uniform(
        ratio_key, (attempts,), minval=math.log(ratio[0]), maxval=math.log(ratio[1])
    )
    crop_w = jnp.sqrt(area * height * width * jnp.exp(log_ratio))
    crop_h = jnp.sqrt(area * height * width / jnp.exp(log_ratio))
    fits = (crop_w <= width) & (crop_h <= height)
    first = jnp.argmax(fits)  # The first attempt that fits; the whole image if none does.
    crop_h = jnp.where(fits[first], crop_h[first], float(height))
    crop_w = jnp.where(fits[first], crop_w[first], float(width))
    # Keep every bilinear sample inside the pixel centres, so no fill is pulled in: the
    # window may start no closer than half an output pixel (in input units) to an edge.
    margin_y, margin_x = 0.5 * (1 - crop_h / height), 0.5 * (1 - crop_w / width)
    top = margin_y + jax.random.uniform(top_key) * (height - crop_h - 2 * margin_y)
    left = margin_x + jax.random.uniform(left_key) * (width - crop_w - 2 * margin_x)
    return geometry.crop_matrix(top, left, crop_h, crop_w, height, width), jnp.array(False)


def random_rotate(key, height: int, width: int, degrees: float = 15.0):
    angle = jnp.deg2rad(jax.random.uniform(key, minval=-degrees, maxval=degrees))
    return geometry.rotation_matrix(angle, height, width), jnp.array(False)


def random_shear(key, height: int, width: int, degrees: float = 10.0):
    angle = jnp.deg2rad(jax.random.uniform(key, minval=-degrees, maxval=degrees))
    return geometry.shear_matrix(angle, height, width), jnp.array(False)


def random_zoom(key, height: int, width: int, lower: float = 0.9, upper: float = 1.1):
    factor = jax.random.uniform(key, minval=lower, maxval=upper)
    return geometry.scale_matrix(factor, factor, height, width), jnp.array(False)


def pca_lighting(key, image, std: float = 0.1, eigen: str = "imagenet", basis=None):
    eigenvalues, eigenvectors = basis
    return colour.pca_lighting(key, image, std, eigenvalues, eigenvectors)


GEOMETRIC_OPS: dict[str, Callable] = {
    "mirror": random_mirror,
    "random_crop": random_crop,
    "random_resized_crop": random_resized_crop,
    "rotate": random_rotate,
    "shear": random_shear,
    "zoom": random_zoom,
}
COLOUR_OPS: dict[str, Callable] = {
    "colour_shift": colour.colour_shift,
    "pca_lighting": pca_lighting,
    "brightness": colour.brightness,
    "contrast": colour.contrast,
    "saturation": colour.saturation,
    "hue": colour.hue,
}
_LEADING_ARGS = {**{name: 3 for name in GEOMETRIC_OPS}, **{name: 2 for name in COLOUR_OPS}}


def list_augmentations() -> list[str]:
    return sorted({**GEOMETRIC_OPS, **COLOUR_OPS})


def _split_top_level(spec: str) -> list[str]:
    """Splits 'a, b(x=(1, 2)), c' at the commas outside parentheses."""
    parts, depth, current = [], 0, []
    for char in spec:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def parse_augment(spec: str | Sequence[Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """An augment spec -> [(op name, keyword arguments)], validated before anything runs.

    ``spec``: ``None``/``''`` (none), a comma-separated string, or a list of strings or
    of dicts ``{'name': ..., **kwargs}``.
    """
    if not spec:
        return []
    items = _split_top_level(spec) if isinstance(spec, str) else list(spec)
    ops = []
    for item in items:
        if isinstance(item, Mapping):
            kwargs = dict(item)
            name, args = kwargs.pop("name", None), ()
        else:
            name, args, kwargs = parse_call(
                str(item),
                f"Cannot read augmentation {str(item)!r}: write name or name(arg=value, ...) "
                f"with literal arguments; valid names: {list_augmentations()}.",
            )
        if name not in _LEADING_ARGS:
            raise ValueError(f"Unknown augmentation {name!r}; valid: {list_augmentations()}.")
        fn = GEOMETRIC_OPS.get(name) or COLOUR_OPS[name]
        params = list(inspect.signature(fn).parameters)[_LEADING_ARGS[name] :]
        params = [p for p in params if p != "basis"]
        if len(args) > len(params) or set(kwargs) - set(params):
            raise ValueError(f"Augmentation {name!r} takes arguments {params}; got {item!r}.")
        kwargs = {**dict(zip(params, args, strict=False)), **kwargs}
        if name == "pca_lighting" and kwargs.get("eigen", "imagenet") not in ("imagenet", "data"):
            raise ValueError(f"pca_lighting eigen must be 'imagenet' or 'data'; got {item!r}.")
        ops.append((name, kwargs))
    return ops


def needs_data_pca(spec) -> bool:
    """Whether ``spec`` has ``pca_lighting(eigen='data')`` (needs :func:`colour.rgb_pca`)."""
    return any(
        name == "pca_lighting" and kwargs.get("eigen") == "data"
        for name, kwargs in parse_augment(spec)
    )


def _checked_permutation(permutation: Sequence[int] | None) -> np.ndarray | None:
    """``landmark_flip_permutation`` as int32, checked to be a permutation of 0..K-1."""
    if permutation is None:
        return None
    permutation = np.asarray(permutation, np.int32)
    if sorted(permutation.tolist()) != list(range(len(permutation))):
        raise ValueError(
            f"landmark_flip_permutation must be a permutation of 0..K-1; got {permutation}."
        )
    return permutation


def _warped(
    example: Example, forward: jax.Array, flipped: jax.Array, permutation: np.ndarray | None
) -> Example:
    """``example`` with its image warped by ``forward`` (3x3) and its boxes and landmarks
    moved with it; landmarks re-indexed by ``permutation`` where ``flipped``."""
    image = example["image"]
    height, width = image.shape[:2]
    out = dict(example, image=geometry.warp_image(image, forward))
    if "boxes" in example:
        out["boxes"] = geometry.transform_boxes(example["boxes"], forward, height, width)
    if "landmarks" in example:
        moved = geometry.transform_points(example["landmarks"], forward, height, width)
        if permutation is not None:
            moved = jnp.where(flipped, jnp.take(moved, permutation, axis=-2), moved)
        out["landmarks"] = moved
    return out


def make_augment(
    spec,
    *,
    landmark_flip_permutation: Sequence[int] | None = None,
    pca_basis: tuple[np.ndarray, np.ndarray] | None = None,
) -> Callable[[jax.Array, Example], Example]:
    """Returns ``augment(key, example) -> example`` for one example (module docstring).

    Args:
      spec: the augment spec (see :func:`parse_augment`).
      landmark_flip_permutation: [K] index of each landmark's mirror partner; landmarks
        are re-indexed by it when an odd number of mirrors happened.
      pca_basis: (eigenvalues [3], eigenvectors [3, 3]) for ``pca_lighting(eigen='data')``.
    """
    ops = parse_augment(spec)
    if needs_data_pca(spec) and pca_basis is None:
        raise ValueError(
            "pca_lighting(eigen='data') needs pca_basis=convjax.data.colour.rgb_pca(images)."
        )
    permutation = _checked_permutation(landmark_flip_permutation)
    imagenet = (colour.IMAGENET_EIGENVALUES, colour.IMAGENET_EIGENVECTORS)

    def augment(key: jax.Array, example: Example) -> Example:
        image = example["image"]
        if image.ndim != 3 or not jnp.issubdtype(image.dtype, jnp.floating):
            raise ValueError(
                f"augment expects one float image [H, W, C] in 0..1; got {image.dtype} "
                f"{tuple(image.shape)} (use make_batch_augment for batches)."
            )
        height, width = image.shape[:2]
        keys = jax.random.split(key, max(len(ops), 1))
        forward, flipped, geometric = geometry.identity_matrix(), jnp.array(False), False
        for (name, kwargs), op_key in zip(ops, keys, strict=False):
            if name in GEOMETRIC_OPS:
                matrix, op_flipped = GEOMETRIC_OPS[name](op_key, height, width, **kwargs)
                forward, flipped, geometric = matrix @ forward, flipped ^ op_flipped, True
        out = _warped(example, forward, flipped, permutation) if geometric else dict(example)
        for (name, kwargs), op_key in zip(ops, keys, strict=False):
            if name == "pca_lighting":
                basis = pca_basis if kwargs.get("eigen") == "data" else imagenet
                out["image"] = pca_lighting(op_key, out["image"], basis=basis, **kwargs)
            elif name in COLOUR_OPS:
                out["image"] = COLOUR_OPS[name](op_key, out["image"], **kwargs)
        return out

    return augment


AUGMENTED_KEYS = ("image", "boxes", "landmarks")


def make_batch_augment(spec, **kwargs) -> Callable[[jax.Array, Example], Example]:
    """Like :func:`make_augment` over a batch: ``image`` [B, H, W, C], one key per example.
    Keys other than image/boxes/landmarks pass through unchanged."""
    augment = jax.vmap(make_augment(spec, **kwargs))

    def augment_batch(key: jax.Array, batch: Example) -> Example:
        moving = {k: batch[k] for k in AUGMENTED_KEYS if k in batch}
        keys = jax.random.split(key, batch["image"].shape[0])
        return {**batch, **augment(keys, moving)}

    return augment_batch


def batch_augment_from_config(dataset, pca_basis=None) -> Callable[[jax.Array, Example], Example]:
    """``augment_batch(key, batch) -> batch`` for a ``dataset`` config section or its
    :class:`~convjax.data.spec.DatasetSpec`: :func:`make_batch_augment` of
    ``dataset.augment``, then the train chain's pixel ops (``normalize``,
    ``value_range``; batches come in with images in 0..1). This is what the pipeline
    runs; call it in the train step when ``dataset.augment_in_pipeline`` is False."""
    from convjax.data.preprocess import apply_pixel_ops
    from convjax.data.spec import resolve  # spec parses augment specs with this module

    spec = resolve(dataset)
    augment_batch = make_batch_augment(
        spec.config.augment,
        landmark_flip_permutation=spec.config.landmark_flip_permutation,
        pca_basis=pca_basis,
    )
    pixel_ops = spec.train_chain.pixel_ops

    def augment_and_normalise(key: jax.Array, batch: Example) -> Example:
        batch = augment_batch(key, batch)
        return {**batch, "image": apply_pixel_ops(pixel_ops, batch["image"])}

    return augment_and_normalise
