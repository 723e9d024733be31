"""The built-in preprocessing ops (see :mod:`convjax.data.preprocess` for chains).

Examples are dicts with ``'image'`` (encoded bytes before the decode op, uint8
``[h, w, c]`` after it) and whatever the dataset's example function returns; ops that
move the image also move normalised ``boxes`` [..., 4] and ``landmarks`` [..., K, 2].

The ImageNet chains (torchvision's and flax's recipe)::

    train: decode_jpeg_and_inception_crop(224)|flip_lr|normalize('imagenet')
    eval:  decode(3)|resize_small(256)|central_crop(224)|normalize('imagenet')
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from convjax.data.preprocess import register_op

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_METHODS = ("bilinear", "bicubic", "area", "lanczos3", "lanczos5", "gaussian", "nearest")


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int | np.integer) and s > 0 for s in pair):
        raise ValueError(f"size must be a positive int or (height, width); got {size!r}.")
    return int(pair[0]), int(pair[1])


def _check_method(method: str) -> None:
    if method not in RESIZE_METHODS:
        raise ValueError(f"method must be one of {RESIZE_METHODS}; got {method!r}.")


def _check_range(name: str, pair: Sequence[float], low: float, high: float) -> tuple[float, float]:
    if len(pair) != 2 or not low <= pair[0] <= pair[1] <= high:
        raise ValueError(f"{name} must be (min, max) within [{low}, {high}]; got {pair!r}.")
    return float(pair[0]), float(pair[1])


def resize_image(image: tf.Tensor, size, method: str, antialias: bool) -> tf.Tensor:
    """uint8 [h, w, c] -> uint8 [*size, c] (``tf.image.resize``, rounded to the nearest)."""
    resized = tf.image.resize(image, size, method=method, antialias=antialias)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _move_geometry(example: dict, scale, offset) -> dict:
    """Normalised coordinates u -> u * scale + offset ((y, x) pairs), boxes clipped."""
    out = dict(example)
    if "landmarks" in example:
        out["landmarks"] = example["landmarks"] * scale + offset
    if "boxes" in example:
        box_scale, box_offset = tf.tile(scale, [2]), tf.tile(offset, [2])
        out["boxes"] = tf.clip_by_value(example["boxes"] * box_scale + box_offset, 0.0, 1.0)
    return out


# ------------------------------------------------------------------------ decoding
def _dct(fast_dct: bool) -> str:
    # libjpeg's accurate integer DCT is what PIL (and so torchvision) decodes with;
    # TensorFlow's default, the fast one, differs from it by up to ~5 grey levels.
    return "INTEGER_FAST" if fast_dct else "INTEGER_ACCURATE"


def decode_any(data: tf.Tensor, channels: int, fast_dct: bool = False) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP -> uint8 [h, w, channels] (0: the file's channels)."""
    return tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=channels, dct_method=_dct(fast_dct)),
        lambda: tf.io.decode_image(data, channels=channels, expand_animations=False),
    )


@register_op("decode", kind="encoded", decoded="channels")
def decode(channels: int | None = 3, fast_dct: bool = False):
    """Decodes the encoded image (JPEG, PNG, GIF, BMP) to uint8 [h, w, channels]
    (``channels=None`` keeps the file's). JPEGs use libjpeg's accurate DCT, as PIL
    does (``fast_dct=True``: the fast one, TensorFlow's default)."""
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None; got {channels!r}.")

    def fn(example):
        return {**example, "image": decode_any(example["image"], channels or 0, fast_dct)}

    return fn


def inception_window(seed, height, width, area=(0.08, 1.0), aspect=(3 / 4, 4 / 3), attempts=10):
    """Inception's random crop window, as torchvision's ``RandomResizedCrop`` draws it.

    Up to ``attempts`` tries of an area fraction uniform in ``area`` and an aspect ratio
    (width / height) log-uniform in ``aspect``; sides ``round(sqrt(area * ratio))``;
    the first try that fits is placed uniformly at random; if none fits, the centred
    largest window with the ratio clamped to ``aspect``. Returns int32
    ``(top, left, crop_height, crop_width)``.
    """
    height_f, width_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    draws = tf.random.stateless_uniform([4, attempts], seed, dtype=tf.float32)
    target = height_f * width_f * (area[0] + draws[0] * (area[1] - area[0]))
    log_low, log_high = math.log(aspect[0]), math.log(aspect[1])
    ratio = tf.exp(log_low + draws[1] * (log_high - log_low))
    crop_w, crop_h = tf.round(tf.sqrt(target * ratio)), tf.round(tf.sqrt(target / ratio))
    fits = (crop_w > 0) & (crop_w <= width_f) & (crop_h > 0) & (crop_h <= height_f)
    first = tf.argmax(tf.cast(fits, tf.int32))
    in_ratio = width_f / height_f
    fallback_w = tf.where(in_ratio > aspect[1], tf.round(height_f * aspect[1]), width_f)
    fallback_h = tf.where(in_ratio < aspect[0], tf.round(width_f / aspect[0]), height_f)
    found = tf.reduce_any(fits)
    crop_h = tf.where(found, crop_h[first], fallback_h)
    crop_w = tf.where(found, crop_w[first], fallback_w)
    top = tf.where(
        found,
        tf.floor(draws[2, first] * (height_f - crop_h + 1)),
        tf.floor((height_f - crop_h) / 2),
    )
    left = tf.where(
        found, tf.floor(draws[3, first] * (width_f - crop_w + 1)), tf.floor((width_f - crop_w) / 2)
    )
    return tuple(tf.cast(v, tf.int32) for v in (top, left, crop_h, crop_w))


def _inception_args(size, area, aspect, method):
    _check_method(method)
    area = _check_range("area", area, 1e-6, 1.0)
    aspect = _check_range("aspect", aspect, 1e-3, 1e3)
    return _size_pair(size), area, aspect


@register_op(
    "decode_jpeg_and_inception_crop", kind="encoded", random=True, decoded="inception_crop"
)
def decode_jpeg_and_inception_crop(
    size: int | Sequence[int],
    area: Sequence[float] = (0.08, 1.0),
    aspect: Sequence[float] = (3 / 4, 4 / 3),
    method: str = "bilinear",
    antialias: bool = True,
    fast_dct: bool = False,
):
    """Inception's crop at full resolution: a random window (:func:`inception_window`:
    area fraction in ``area``, aspect ratio in ``aspect``) decoded alone from the JPEG
    (``tf.image.decode_and_crop_jpeg``, accurate DCT unless ``fast_dct``; other formats
    are decoded whole, then cropped), then resized once to ``size`` -> uint8 [*size, 3]."""
    size, area, aspect = _inception_args(size, area, aspect, method)

    def fn(example, seed):
        data = example["image"]

        def from_jpeg():
            shape = tf.image.extract_jpeg_shape(data)
            top, left, h, w = inception_window(seed, shape[0], shape[1], area, aspect)
            # Decode a 2-pixel margin too: chroma at the window's edge is upsampled from
            # its neighbours, so the crop's pixels equal those of the whole image decoded.
            top_m, left_m = tf.maximum(top - 2, 0), tf.maximum(left - 2, 0)
            bottom_m, right_m = (
                tf.minimum(top + h + 2, shape[0]),
                tf.minimum(left + w + 2, shape[1]),
            )
            window = tf.stack([top_m, left_m, bottom_m - top_m, right_m - left_m])
            image = tf.image.decode_and_crop_jpeg(
                data, window, channels=3, dct_method=_dct(fast_dct)
            )
            return image[top - top_m : top - top_m + h, left - left_m : left - left_m + w]

        def from_other():
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            shape = tf.shape(image)
            top, left, h, w = inception_window(seed, shape[0], shape[1], area, aspect)
            return image[top : top + h, left : left + w]

        crop = tf.cond(tf.io.is_jpeg(data), from_jpeg, from_other)
        return {**example, "image": resize_image(crop, size, method, antialias)}

    return fn


@register_op("inception_crop", random=True)
def inception_crop(
    size: int | Sequence[int],
    area: Sequence[float] = (0.08, 1.0),
    aspect: Sequence[float] = (3 / 4, 4 / 3),
    method: str = "bilinear",
    antialias: bool = True,
):
    """:func:`decode_jpeg_and_inception_crop` on a decoded image uint8 [h, w, c]."""
    size, area, aspect = _inception_args(size, area, aspect, method)

    def fn(example, seed):
        image = example["image"]
        shape = tf.shape(image)
        top, left, h, w = inception_window(seed, shape[0], shape[1], area, aspect)
        crop = image[top : top + h, left : left + w]
        return {**example, "image": resize_image(crop, size, method, antialias)}

    return fn


# ----------------------------------------------------------------- deterministic
@register_op("channels")
def channels(channels: int | None = 3):
    """Converts gray <-> RGB to ``channels`` (1 or 3; ``None`` keeps the image's)."""
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None; got {channels!r}.")

    def fn(example):
        image = example["image"]
        have = image.shape[-1]
        if channels is None or have == channels:
            return example
        if channels == 3 and have == 1:
            return {**example, "image": tf.image.grayscale_to_rgb(image)}
        if channels == 1 and have == 3:
            return {**example, "image": tf.image.rgb_to_grayscale(image)}
        raise ValueError(f"Cannot convert images with {have} channels to {channels} channels.")

    return fn


@register_op("resize")
def resize(size: int | Sequence[int], method: str = "bilinear", antialias: bool = True):
    """Stretches the image to ``size`` (int or (height, width)); normalised boxes and
    landmarks stay valid. An image already of that size is left as it is."""
    size = _size_pair(size)
    _check_method(method)

    def fn(example):
        image = example["image"]
        if tuple(image.shape[:2]) == size:
            return example
        return {**example, "image": resize_image(image, size, method, antialias)}

    return fn


@register_op("resize_small")
def resize_small(size: int, method: str = "bilinear", antialias: bool = True):
    """Resizes so the shorter side is ``size``, keeping the aspect ratio (torchvision's
    ``Resize(size)``: the longer side becomes ``int(size * long / short)``)."""
    (size, _) = _size_pair(size)
    _check_method(method)

    def fn(example):
        image = example["image"]
        shape = tf.shape(image)[:2]
        short, long = tf.reduce_min(shape), tf.reduce_max(shape)
        new_long = (size * long) // short  # int(size * long / short) for positive ints
        new = tf.where(shape[0] <= shape[1], tf.stack([size, new_long]), tf.stack([new_long, size]))
        return {**example, "image": resize_image(image, new, method, antialias)}

    return fn


def _crop_geometry(example, image_shape, top, left, crop_h, crop_w):
    """Moves normalised boxes/landmarks into the window's coordinates."""
    hw = tf.cast(image_shape, tf.float32)
    crop = tf.cast(tf.stack([crop_h, crop_w]), tf.float32)
    scale = hw / crop
    offset = -tf.cast(tf.stack([top, left]), tf.float32) / crop
    return _move_geometry(example, scale, offset)


@register_op("central_crop")
def central_crop(size: int | Sequence[int]):
    """Crops the centre ``size`` (int or (height, width)), at torchvision's offset
    ``round((h - crop_h) / 2)``; boxes and landmarks move with it."""
    crop_h, crop_w = _size_pair(size)

    def fn(example):
        image = example["image"]
        shape = tf.shape(image)[:2]
        top = tf.cast(tf.round((shape[0] - crop_h) / 2), tf.int32)
        left = tf.cast(tf.round((shape[1] - crop_w) / 2), tf.int32)
        out = _crop_geometry(example, shape, top, left, crop_h, crop_w)
        out["image"] = tf.image.crop_to_bounding_box(image, top, left, crop_h, crop_w)
        return out

    return fn


@register_op("resize_cover_crop")
def resize_cover_crop(size: int | Sequence[int], method: str = "bilinear", antialias: bool = True):
    """Scales the image to just cover ``size`` (keeping the aspect ratio), then crops
    the centre (``dataset.resize_mode='center_crop'``)."""
    target = _size_pair(size)
    _check_method(method)

    def fn(example):
        image = example["image"]
        if tuple(image.shape[:2]) == target:
            return example
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = tf.reduce_max(tf.constant(target, tf.float32) / shape)
        cover = tf.maximum(tf.cast(tf.math.ceil(shape * scale - 1e-3), tf.int32), target)
        image = resize_image(image, cover, method, antialias)
        return {**example, "image": tf.image.resize_with_crop_or_pad(image, *target)}

    return fn


# ----------------------------------------------------------------------- random
@register_op("flip_lr", random=True)
def flip_lr(p: float = 0.5, landmark_permutation: Sequence[int] | None = None):
    """Mirrors left-right with probability ``p``; boxes and landmarks move with it, and
    landmarks are re-indexed by ``landmark_permutation`` (each one's mirror partner;
    default: the dataset's ``landmark_flip_permutation``)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1]; got {p!r}.")
    permutation = None if landmark_permutation is None else list(landmark_permutation)
    if permutation is not None and sorted(permutation) != list(range(len(permutation))):
        raise ValueError(
            f"landmark_permutation must be a permutation of 0..K-1; got {permutation}."
        )

    def flipped(example):
        out = _move_geometry(example, tf.constant([1.0, -1.0]), tf.constant([0.0, 1.0]))
        out["image"] = tf.reverse(example["image"], axis=[1])
        if "boxes" in example:  # (ymin, 1 - xmax, ymax, 1 - xmin)
            ymin, xmin, ymax, xmax = tf.unstack(example["boxes"], axis=-1)
            out["boxes"] = tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)
        if "landmarks" in example and permutation is not None:
            out["landmarks"] = tf.gather(out["landmarks"], permutation, axis=-2)
        return out

    def fn(example, seed):
        flip = tf.random.stateless_uniform([], seed) < p
        return tf.cond(flip, lambda: flipped(example), lambda: dict(example))

    return fn


# ------------------------------------------------------------------------ labels
@register_op("onehot")
def onehot(depth: int, key: str = "label", smoothing: float = 0.0):
    """Replaces the int label ``key`` by float32 [depth] one-hot targets, smoothed:
    ``(1 - smoothing) * onehot + smoothing / depth`` (optax's ``smooth_labels``)."""
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive int; got {depth!r}.")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1); got {smoothing!r}.")

    def fn(example):
        targets = tf.one_hot(example[key], depth, dtype=tf.float32)
        return {**example, key: (1.0 - smoothing) * targets + smoothing / depth}

    return fn


# ------------------------------------------------------------------------ pixels
@register_op("value_range", kind="pixel")
def value_range(low: float = -1.0, high: float = 1.0):
    """Maps pixel values from 0..1 to ``low..high`` (on whole batches)."""
    if not high > low:
        raise ValueError(f"high must exceed low; got {low!r}, {high!r}.")
    scale, low = np.float32(high - low), np.float32(low)

    def fn(image):
        return image * scale + low

    return fn


@register_op("normalize", kind="pixel")
def normalize(
    mean: float | Sequence[float] | str = "imagenet", std: float | Sequence[float] | None = None
):
    """``(x - mean) / std`` per channel, on pixel values in 0..1 (on whole batches);
    ``mean='imagenet'`` is ImageNet's mean and std."""
    if mean == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD if std is None else std
    if std is None:
        raise ValueError("give both mean and std (or mean='imagenet').")
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if mean.ndim > 1 or std.ndim > 1 or np.any(std <= 0):
        raise ValueError("mean and std must be numbers or one per channel, std positive.")

    def fn(image):
        return (image - mean) / std

    return fn
