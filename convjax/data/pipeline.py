"""tfds input pipelines: deterministic, resumable, sharded per host.

A training run calls these functions:

- :func:`dataset_metadata` -- split sizes, the image shape after preprocessing, classes.
- :func:`create_train_iterator` -- an infinite iterator of this host's share of every
  global batch, as numpy arrays (``{'image': float32 [b, H, W, C], 'label': int32 [b]}``
  by default). The order is a pure function of ``(seed, host)``: epoch ``e`` of host
  ``h`` is the host's shard shuffled with a seed derived from ``(seed, h, e)``. With
  ``start_step=k`` the iterator yields exactly the batches ``k, k+1, ...`` of the
  uninterrupted sequence: whole epochs are skipped without reading anything, and the
  examples skipped inside the current epoch are read but not decoded (or, with
  ``cache``, taken from memory).
- :func:`create_eval_iterator` -- one unshuffled pass; every batch is full size, with
  ``'mask'`` float32 [b] (1 real, 0 padding); every eval example appears exactly once
  over all hosts, and every host yields the same number of batches.
- :func:`device_augment` -- with ``dataset.augment_in_pipeline=False``, the augmentation
  and normalisation the train step applies on device instead.

Stages, per example unless noted: read the host's shard (``tfds.split_for_jax_process``)
-> decode + example function (``convjax.data.examples``, the extension point) + resize
and channel conversion, uint8 -> [cache] -> shuffle per epoch -> batch -> scale to 0..1
and normalise (per batch) -> prefetch (tf.data AUTOTUNE). Placing batches on devices
is the train loop's job.

Which dataset and how it is preprocessed comes from the ``dataset`` config section
(``convjax.data.config``). Host placement defaults to ``jax.process_index()`` /
``jax.process_count()``; the keyword arguments ``process_index`` and ``process_count``
override them (tests simulate several hosts this way).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from convjax.data import augment
from convjax.data.builders import get_builder
from convjax.data.colour import rgb_pca
from convjax.data.config import resolve_dataset_config
from convjax.data.examples import get_example_fn

AUTOTUNE = tf.data.AUTOTUNE
RESIZE_MODES = ("stretch", "center_crop")
_EPOCH_SEED_STRIDE = 2_654_435_761  # Any odd constant: spreads epoch seeds apart.


@dataclasses.dataclass(frozen=True)
class DatasetMetadata:
    """What the loop needs to know about a dataset before it sees a batch."""

    num_train: int
    num_eval: int
    image_shape: tuple[int, int, int]  # (H, W, C) after preprocessing
    num_classes: int | None


def _hide_gpus_from_tensorflow() -> None:
    """tf.data runs on the host; keep TensorFlow off accelerators that JAX uses."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow already initialised its devices.
        pass


def _host(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if not 0 <= index < count:
        raise ValueError(f"process_index must be in [0, {count}); got {index}.")
    return index, count


def _host_batch_size(global_batch_size: int, process_count: int) -> int:
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be a positive multiple of the "
            f"number of hosts ({process_count})."
        )
    return global_batch_size // process_count


def _check_config(config: ml_collections.ConfigDict) -> None:
    if config.resize_mode not in RESIZE_MODES:
        raise ValueError(
            f"dataset.resize_mode must be one of {RESIZE_MODES}; got {config.resize_mode!r}."
        )
    if config.channels not in (None, 1, 3):
        raise ValueError(f"dataset.channels must be 1, 3 or None; got {config.channels!r}.")
    if config.image_size is not None and (
        len(config.image_size) != 2 or min(config.image_size) <= 0
    ):
        raise ValueError(
            f"dataset.image_size must be (H, W) with positive sizes or None; "
            f"got {config.image_size!r}."
        )
    for field in ("mean", "std"):
        value = config[field]
        if value is not None and np.ndim(value) > 1:
            raise ValueError(f"dataset.{field} must be a number or one per channel; got {value!r}.")
    if (config.mean is None) != (config.std is None):
        raise ValueError("Give both dataset.mean and dataset.std, or neither.")
    if config.std is not None and np.any(np.asarray(config.std) <= 0):
        raise ValueError(f"dataset.std must be positive; got {config.std!r}.")
    augment.parse_augment(config.augment)  # Raises on unknown ops or arguments.


def _prepare_image(image: tf.Tensor, config: ml_collections.ConfigDict) -> tf.Tensor:
    """image: uint8 [h, w, c] -> uint8 [H, W, C] resized and channel-converted."""
    if image.shape.rank != 3:
        raise ValueError(f"Example images must be [H, W, C]; got shape {image.shape}.")
    channels = image.shape[-1]
    if config.channels == 3 and channels == 1:
        image = tf.image.grayscale_to_rgb(image)
    elif config.channels == 1 and channels == 3:
        image = tf.image.rgb_to_grayscale(image)
    elif config.channels is not None and channels != config.channels:
        raise ValueError(
            f"Cannot convert images with {channels} channels to {config.channels} channels."
        )
    if config.image_size is None or tuple(image.shape[:2]) == tuple(config.image_size):
        return image
    target = tuple(int(d) for d in config.image_size)
    size = target
    if config.resize_mode == "center_crop":
        # Scale so the image covers the target, keeping its aspect ratio, then crop.
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = tf.reduce_max(tf.constant(target, tf.float32) / shape)
        size = tf.maximum(tf.cast(tf.math.ceil(shape * scale - 1e-3), tf.int32), target)
    resized = tf.image.resize(image, size, method=config.resize_method, antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
    if config.resize_mode == "center_crop":
        image = tf.image.resize_with_crop_or_pad(image, *target)
    return image


def _feature(features: tfds.features.FeaturesDict, key: str):
    """The top-level feature ``key``, or None."""
    return features[key] if key in features.keys() else None


def _decoded_dataset(
    builder: tfds.core.DatasetBuilder, config: ml_collections.ConfigDict, split
) -> tuple[tf.data.Dataset, Callable]:
    """Returns (records with the image still encoded, decode function), read in file order.

    The decode function maps a record to the example function's fixed-shape arrays
    (image uint8 [H, W, C]); it is applied after skipping, so skipped records are
    never decoded.
    """
    features = builder.info.features
    skip_image = isinstance(_feature(features, config.image_key), tfds.features.Image)
    decoders = {config.image_key: tfds.decode.SkipDecoding()} if skip_image else None
    records = builder.as_dataset(
        split=split,
        shuffle_files=False,
        decoders=decoders,
        read_config=tfds.ReadConfig(try_autocache=False),  # Caching is ours to decide.
    )
    example_fn = get_example_fn(config)

    def decode(record):
        example = dict(record)
        if skip_image:
            example[config.image_key] = features[config.image_key].decode_example(
                example[config.image_key]
            )
        arrays = dict(example_fn(example, config))
        arrays["image"] = _prepare_image(arrays["image"], config)
        return arrays

    spec = records.map(decode).element_spec
    for key, value in spec.items():
        if not value.shape.is_fully_defined():
            hint = " Set dataset.image_size." if key == "image" else " Pad it in the example_fn."
            raise ValueError(
                f"Dataset {config.name!r}: '{key}' has a variable shape {value.shape}; "
                f"batches need fixed shapes.{hint}"
            )
    return records, decode


def _finish_batch(config: ml_collections.ConfigDict, normalise: bool = True):
    """Returns batch -> batch with image float32 in 0..1, normalised if mean/std are set."""
    mean = None if (config.mean is None or not normalise) else tf.constant(config.mean, tf.float32)
    std = None if config.std is None else tf.constant(config.std, tf.float32)

    def finish(batch):
        batch = dict(batch)
        image = tf.cast(batch["image"], tf.float32) * (1.0 / 255.0)
        if mean is not None:
            image = (image - mean) / std
        batch["image"] = image
        return batch

    return finish


def _should_cache(config: ml_collections.ConfigDict, num_examples: int, spec) -> bool:
    if config.cache is not None:
        return bool(config.cache)
    example_bytes = sum(s.shape.num_elements() * s.dtype.size for s in spec.values())
    return num_examples * example_bytes <= config.cache_max_bytes


def _epoch_seed_base(seed: int, process_index: int, process_count: int) -> int:
    state = np.random.SeedSequence([seed % 2**32, process_index, process_count])
    return int(state.generate_state(1, np.uint32)[0])


def dataset_metadata(
    dataset: ml_collections.ConfigDict, *, process_count: int | None = None
) -> DatasetMetadata:
    """Split sizes (whole splits, all hosts), preprocessed image shape, class count."""
    del process_count  # The metadata describes whole splits.
    config = resolve_dataset_config(dataset)
    _check_config(config)
    builder = get_builder(config)
    records, decode = _decoded_dataset(builder, config, config.train_split)
    image_shape = tuple(int(d) for d in records.map(decode).element_spec["image"].shape)
    num_classes = config.num_classes
    label_feature = _feature(builder.info.features, config.label_key)
    if num_classes is None and isinstance(label_feature, tfds.features.ClassLabel):
        num_classes = label_feature.num_classes
    return DatasetMetadata(
        num_train=builder.info.splits[config.train_split].num_examples,
        num_eval=builder.info.splits[config.eval_split].num_examples,
        image_shape=image_shape,
        num_classes=num_classes,
    )


def create_train_iterator(
    dataset: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite iterator of this host's share of each global batch (see module docstring).

    Yields ``{'image': float32 [b, H, W, C], 'label': int32 [b], ...}`` with
    ``b = global_batch_size // process_count``; batch ``k`` is the ``k``-th of the
    uninterrupted sequence for ``(seed, host)``, starting at ``k = start_step``.
    """
    _hide_gpus_from_tensorflow()
    config = resolve_dataset_config(dataset)
    _check_config(config)
    index, count = _host(process_index, process_count)
    batch_size = _host_batch_size(global_batch_size, count)
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0; got {start_step}.")
    builder = get_builder(config)
    split = tfds.split_for_jax_process(
        config.train_split, process_index=index, process_count=count, drop_remainder=True
    )
    num_examples = builder.info.splits[split].num_examples
    if num_examples == 0:
        raise ValueError(f"Split {config.train_split!r} has no examples for host {index}/{count}.")
    records, decode = _decoded_dataset(builder, config, split)
    cache = _should_cache(config, num_examples, records.map(decode).element_spec)
    if cache:
        records = records.map(decode, num_parallel_calls=AUTOTUNE).cache()

    shuffle_buffer = max(1, min(int(config.shuffle_buffer), num_examples))
    seed_base = _epoch_seed_base(seed, index, count)

    def epoch(e):
        return records.shuffle(shuffle_buffer, seed=seed_base + e * _EPOCH_SEED_STRIDE)

    start_epoch, offset = divmod(start_step * batch_size, num_examples)
    examples = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(epoch)
    examples = examples.skip(offset)
    if not cache:
        examples = examples.map(decode, num_parallel_calls=AUTOTUNE)
    batches = examples.batch(batch_size, drop_remainder=True)
    augment_here = bool(augment.parse_augment(config.augment)) and config.augment_in_pipeline
    # Augmentation works on 0..1 images, so normalisation then follows it.
    normalise_in_tf = not augment.parse_augment(config.augment)
    batches = batches.map(_finish_batch(config, normalise_in_tf), num_parallel_calls=AUTOTUNE)
    host_batches = iter(tfds.as_numpy(batches.prefetch(AUTOTUNE)))
    if not augment_here:
        return host_batches
    pca_basis = _data_pca_basis(builder, config) if augment.needs_data_pca(config.augment) else None
    return _augmented(host_batches, config, pca_basis, seed=seed, host=index, step=start_step)


PCA_EXAMPLES = 2048


def _data_pca_basis(builder, config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
    """RGB eigen-decomposition of the first PCA_EXAMPLES training images (same on all hosts)."""
    records, decode = _decoded_dataset(builder, config, config.train_split)
    images = records.take(PCA_EXAMPLES).map(lambda r: decode(r)["image"]).batch(PCA_EXAMPLES)
    return rgb_pca(next(iter(tfds.as_numpy(images))) / 255.0)


_AUGMENTERS: dict[str, Callable] = {}


def augment_key(seed: jax.Array | int, index: jax.Array | int, step: jax.Array | int) -> jax.Array:
    """The augmentation key of batch ``step`` on host ``index`` (in the pipeline) or on
    device ``index`` (in the train step): ``fold_in(fold_in(key(seed), index), step)``."""
    seed = jax.numpy.asarray(seed, jax.numpy.uint32)
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), index), step)


BatchTransform = Callable[[dict[str, jax.Array], jax.Array, jax.Array], dict[str, jax.Array]]


def device_augment(dataset: ml_collections.ConfigDict, *, seed: int) -> BatchTransform | None:
    """With ``dataset.augment_in_pipeline=False`` (and an ``augment`` spec), the train step's
    ``transform(batch, step, device_index) -> batch``: ``dataset.augment`` then the
    normalisation, keyed by :func:`augment_key` ``(seed, device_index, step)``, on images
    the pipeline left in 0..1. It is the pipeline's own augmenter, so a step on one
    device sees the same batch as with ``augment_in_pipeline=True`` on one host.
    ``None`` when there is nothing to do on device.
    """
    config = resolve_dataset_config(dataset)
    _check_config(config)
    if config.augment_in_pipeline or not augment.parse_augment(config.augment):
        return None
    pca_basis = None
    if augment.needs_data_pca(config.augment):
        pca_basis = _data_pca_basis(get_builder(config), config)
    batch_augment = augment.batch_augment_from_config(config, pca_basis)
    seed = seed % 2**32

    def transform(batch, step, device_index):
        return batch_augment(augment_key(seed, device_index, step), batch)

    return transform


def _augment_and_normalise_fn(config: ml_collections.ConfigDict, pca_basis) -> Callable:
    """The jitted ``(batch, seed, host, step) -> batch`` for ``config``; compiled functions
    are reused across iterators with the same augmentation (unless the PCA basis is data)."""
    cache_key = repr((config.augment, config.landmark_flip_permutation, config.mean, config.std))
    if pca_basis is None and cache_key in _AUGMENTERS:
        return _AUGMENTERS[cache_key]
    batch_augment = augment.batch_augment_from_config(config, pca_basis)

    @jax.jit
    def augment_and_normalise(batch, seed, host, step):
        return batch_augment(augment_key(seed, host, step), batch)

    if pca_basis is None:
        _AUGMENTERS[cache_key] = augment_and_normalise
    return augment_and_normalise


def _augmented(
    batches: Iterator[dict[str, np.ndarray]],
    config: ml_collections.ConfigDict,
    pca_basis,
    *,
    seed: int,
    host: int,
    step: int,
) -> Iterator[dict[str, np.ndarray]]:
    """Applies ``config.augment`` (then normalisation) to each batch with jitted JAX on the
    host CPU; batch ``k`` uses the key ``fold_in(fold_in(key(seed), host), k)``, so a
    resumed run draws the same augmentations."""
    augment_and_normalise = _augment_and_normalise_fn(config, pca_basis)
    cpu = jax.local_devices(backend="cpu")[0]
    seed, host = (jax.device_put(np.uint32(v % 2**32), cpu) for v in (seed, host))

    def dispatch(batch, step):  # Asynchronous: the next batch computes while one is used.
        step = jax.device_put(np.uint32(step), cpu)
        return augment_and_normalise(jax.device_put(batch, cpu), seed, host, step)

    pending = dispatch(next(batches), step)
    for batch in batches:
        step += 1
        following = dispatch(batch, step)
        yield jax.tree.map(np.asarray, pending)
        pending = following


def create_eval_iterator(
    dataset: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over ``eval_split`` in file order, padded to full batches with a ``'mask'``.

    Yields ``{'image': float32 [b, H, W, C], 'label': int32 [b], 'mask': float32 [b]}``;
    padding examples are zeros with mask 0. Every host yields
    ``ceil(largest host shard / b)`` batches.
    """
    _hide_gpus_from_tensorflow()
    config = resolve_dataset_config(dataset)
    _check_config(config)
    index, count = _host(process_index, process_count)
    batch_size = _host_batch_size(global_batch_size, count)
    builder = get_builder(config)
    shards = [
        tfds.split_for_jax_process(config.eval_split, process_index=i, process_count=count)
        for i in range(count)
    ]
    sizes = [builder.info.splits[shard].num_examples for shard in shards]
    num_batches = math.ceil(max(sizes) / batch_size)
    if num_batches == 0:
        raise ValueError(f"Split {config.eval_split!r} has no examples.")
    records, decode = _decoded_dataset(builder, config, shards[index])

    def with_mask(example):
        return {**decode(example), "mask": tf.constant(1.0, tf.float32)}

    examples = records.map(with_mask, num_parallel_calls=AUTOTUNE)
    padding = tf.nest.map_structure(
        lambda spec: tf.zeros(spec.shape, spec.dtype), examples.element_spec
    )
    num_padding = num_batches * batch_size - sizes[index]
    examples = examples.concatenate(tf.data.Dataset.from_tensors(padding).repeat(num_padding))
    batches = examples.batch(batch_size, drop_remainder=True)
    batches = batches.map(_finish_batch(config), num_parallel_calls=AUTOTUNE)
    return iter(tfds.as_numpy(batches.prefetch(AUTOTUNE)))


def _as_uint8_image(image: np.ndarray, index: int) -> np.ndarray:
    """One decoded image -> uint8 [H, W, C] (float input must be in 0..1)."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"images[{index}] must be [H, W, C]; got shape {image.shape}.")
    if image.dtype == np.uint8:
        return image
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"images[{index}] must be uint8 or float in 0..1; got {image.dtype}.")
    if image.size and (image.min() < 0.0 or image.max() > 1.0):
        raise ValueError(
            f"images[{index}] is float with values in [{image.min():g}, {image.max():g}]; "
            "float images must be in 0..1 (pass uint8 for 0..255)."
        )
    return np.round(image * 255.0).astype(np.uint8)


def _stand_in_example(features: tfds.features.FeaturesDict, image_key: str) -> dict:
    """Zero-filled tensors for every feature but the image (variable dimensions empty), so
    an example function can run on an image alone."""

    def zeros(info):
        shape = [0 if d is None else d for d in info.shape]
        if info.dtype == tf.string:
            return tf.fill(shape, "")
        return tf.zeros(shape, info.dtype)

    infos = features.get_tensor_info()
    return {k: tf.nest.map_structure(zeros, v) for k, v in infos.items() if k != image_key}


def preprocess_images(images: list[np.ndarray], dataset: ml_collections.ConfigDict) -> np.ndarray:
    """Decoded images -> the eval split's model inputs ``float32 [B, H, W, C]``.

    ``images``: ``[h, w, c]`` uint8 (0..255) or float (0..1) arrays of any size. Each
    goes through the eval pipeline's own steps: the dataset's example function (its
    crop, e.g. LFW's centre), the resize (``image_size``, ``resize_mode``,
    ``resize_method``), the channel conversion, scaling to 0..1 and the ``mean``/``std``
    normalisation. Reads the dataset's feature description (its tfds builder's code; the
    dataset need not be on disk).
    """
    config = resolve_dataset_config(dataset)
    _check_config(config)
    # The feature description comes with the builder's code: no data needs to be on disk.
    features = get_builder(config, prepare=False).info.features
    example_fn = get_example_fn(config)
    declared = _feature(features, config.image_key)
    declared_shape = tuple(declared.shape) if declared is not None else (None, None, None)

    def prepare(image):
        example = {**_stand_in_example(features, config.image_key), config.image_key: image}
        return _prepare_image(dict(example_fn(example, config))["image"], config)

    traced: dict[tuple, Callable] = {}
    prepared = []
    for i, image in enumerate(images):
        image = _as_uint8_image(image, i)
        # The image shape the eval pipeline's graph knows (dynamic where the feature is),
        # so the resize decisions are the same as for the eval split.
        known = zip(declared_shape[:2], image.shape[:2], strict=True)
        spec = (*[d if d == n else None for d, n in known], image.shape[2])
        if spec not in traced:
            signature = [tf.TensorSpec(spec, tf.uint8)]
            traced[spec] = tf.function(prepare, input_signature=signature)
        prepared.append(traced[spec](tf.constant(image)))
    if not prepared:
        raise ValueError("preprocess_images needs at least one image.")
    shapes = {tuple(p.shape) for p in prepared}
    if len(shapes) > 1:
        raise ValueError(
            f"preprocessed images differ in shape {sorted(shapes)}; set dataset.image_size."
        )
    return _finish_batch(config)({"image": tf.stack(prepared)})["image"].numpy()
