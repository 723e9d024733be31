"""tfds input pipelines: deterministic, resumable, sharded per host.

A training run calls these functions, each with the ``dataset`` config section or the
:class:`~convjax.data.spec.DatasetSpec` it resolves to (equal sections share one spec,
so the section is resolved and checked once):

- :func:`dataset_metadata` -- split sizes, the image shape after preprocessing, classes.
- :func:`create_train_iterator` -- an infinite iterator of this host's share of every
  global batch, as numpy arrays (``{'image': float32 [b, H, W, C], 'label': int32 [b]}``
  by default). The order is a pure function of ``(seed, host)``: epoch ``e`` of host
  ``h`` is the host's shard shuffled with a seed derived from ``(seed, h, e)``, and the
  random preprocessing ops of the example at position ``p`` of the host's stream draw
  from ``(seed, h, p)``. With ``start_step=k`` the iterator yields exactly the batches
  ``k, k+1, ...`` of the uninterrupted sequence: whole epochs are skipped without
  reading anything, and the examples skipped inside the current epoch are read but not
  decoded (or, with ``cache``, taken from memory).
- :func:`create_eval_iterator` -- one unshuffled pass; every batch is full size, with
  ``'mask'`` float32 [b] (1 real, 0 padding); every eval example appears exactly once
  over all hosts, and every host yields the same number of batches.
- :func:`device_augment` -- with ``dataset.augment_in_pipeline=False``, the augmentation
  and pixel ops the train step applies on device instead.
- :func:`preprocess_images` -- decoded images through the eval chain (inference).

Stages, per example unless noted: read the host's shard (``tfds.split_for_jax_process``)
-> the example function (``convjax.data.examples``) and the chain's deterministic ops
(``dataset.pp_train``/``pp_eval``, :mod:`convjax.data.preprocess`), uint8 -> [cache]
-> shuffle per epoch -> the chain's random ops (decode-and-crop, flip) -> [skip
undecodable images] -> batch -> scale to 0..1, [``dataset.augment`` in JAX], the
chain's pixel ops (per batch) -> prefetch. The map runs ``num_parallel_calls=AUTOTUNE``
in a private thread pool of one thread per core. Placing batches on devices (and
prefetching them there) is the train loop's job.

Host placement defaults to ``jax.process_index()`` / ``jax.process_count()``; the
keyword arguments ``process_index`` and ``process_count`` override them (tests
simulate several hosts this way).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from convjax.data import augment
from convjax.data.builders import get_builder
from convjax.data.colour import rgb_pca
from convjax.data.config import resolve_dataset_config  # noqa: F401  (callers use pipeline's)
from convjax.data.preprocess import Chain, apply_example_ops, apply_pixel_ops
from convjax.data.spec import RESIZE_MODES, DatasetSpec, resolve  # noqa: F401

AUTOTUNE = tf.data.AUTOTUNE
_EPOCH_SEED_STRIDE = 2_654_435_761  # Any odd constant: spreads epoch seeds apart.
POSITION, SKIPPED = "_position", "_skipped"  # internal keys, removed before yielding
Dataset = ml_collections.ConfigDict | dict | DatasetSpec


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


def _feature(features: tfds.features.FeaturesDict, key: str):
    """The top-level feature ``key``, or None."""
    return features[key] if key in features.keys() else None


def _reader(spec: DatasetSpec, split, chain: Chain) -> tuple[tf.data.Dataset, Callable]:
    """Returns (records with the image still encoded, in file order; ``to_example``).

    ``to_example(record)`` is the example function's dict; the image is decoded with its
    tfds feature first unless the chain's first op reads the encoded image. It runs
    after skipping, so skipped records are never decoded.
    """
    config = spec.config
    image_feature = _feature(spec.builder.info.features, config.image_key)
    encoded = isinstance(image_feature, tfds.features.Image)
    if chain.encoded and not encoded:
        raise ValueError(
            f"Dataset {config.name!r}: {chain.ops[0].name!r} reads encoded images, but "
            f"'{config.image_key}' is not an encoded tfds Image feature; start the chain "
            "without it."
        )
    records = spec.builder.as_dataset(
        split=split,
        shuffle_files=False,
        decoders={config.image_key: tfds.decode.SkipDecoding()} if encoded else None,
        read_config=tfds.ReadConfig(try_autocache=False),  # Caching is ours to decide.
    )

    def to_example(record):
        example = dict(record)
        if encoded and not chain.encoded:
            example[config.image_key] = image_feature.decode_example(example[config.image_key])
        return dict(spec.example_fn(example, config))

    return records, to_example


def _stages(chain: Chain, to_example: Callable, seed_base: int) -> tuple[Callable, Callable]:
    """(prefix(record) -> example, suffix(example, position) -> example): the example
    function and the chain's deterministic ops before its first random one, then the
    rest, seeded by ``(seed_base, position)``."""
    first, rest = chain.split_at_first_random()

    def prefix(record):
        return apply_example_ops(first, to_example(record))

    def suffix(example, position):
        if not rest:
            return example
        seed = tf.stack([tf.constant(seed_base, tf.int64), tf.cast(position, tf.int64)])
        return apply_example_ops(rest, example, seed, first_index=len(first))

    return prefix, suffix


def _output_spec(spec: DatasetSpec, records, prefix, suffix) -> dict:
    """The preprocessed example's element spec, checked to batch (fixed shapes)."""
    position = tf.constant(0, tf.int64)
    element_spec = records.map(lambda r: suffix(prefix(r), position)).element_spec
    image = element_spec["image"]
    if image.shape.rank != 3 or image.dtype != tf.uint8:
        raise ValueError(
            f"Dataset {spec.name!r}: preprocessed images must be uint8 [H, W, C]; got "
            f"{image.dtype.name} {image.shape}."
        )
    for key, value in element_spec.items():
        if not value.shape.is_fully_defined():
            hint = (
                " Resize or crop it in the chain (or set dataset.image_size)."
                if key == "image"
                else " Pad it in the example_fn."
            )
            raise ValueError(
                f"Dataset {spec.name!r}: '{key}' has a variable shape {value.shape}; "
                f"batches need fixed shapes.{hint}"
            )
    return element_spec


def _skip_undecodable(examples: tf.data.Dataset, first_position: int) -> tf.data.Dataset:
    """Drops examples whose preprocessing failed (an undecodable image) and adds
    ``SKIPPED``: how many were dropped so far, from the gaps in ``POSITION``."""

    def count(state, example):
        expected, skipped = state
        position = example[POSITION]
        skipped = skipped + position - expected
        previous = example.get(SKIPPED, tf.constant(0, tf.int64))
        return (position + 1, skipped), {**example, SKIPPED: previous + skipped}

    start = (tf.constant(first_position, tf.int64), tf.constant(0, tf.int64))
    return examples.ignore_errors().scan(start, count)


def _finish_batch(pixel_ops, normalise: bool = True):
    """Returns batch -> batch (or example -> example) with image float32 in 0..1, then
    the pixel ops (unless ``normalise`` is False: ``dataset.augment`` runs first, in
    JAX). The pipelines run it per example, inside the parallel map, where one image's
    pixels stay in cache: over a whole batch of 224x224 images the same arithmetic
    streamed ~600 MB per batch of 128 and cost about as much as the decode."""

    def finish(batch):
        batch = {k: v for k, v in batch.items() if k != POSITION}
        image = tf.cast(batch["image"], tf.float32) * (1.0 / 255.0)
        batch["image"] = apply_pixel_ops(pixel_ops, image) if normalise else image
        return batch

    return finish


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.threading.private_threadpool_size = os.cpu_count() or 1
    options.autotune.enabled = True
    options.deterministic = True
    return options


def _host_batches(batches: tf.data.Dataset, what: str, *, at_end: bool) -> Iterator[dict]:
    """numpy batches without ``POSITION`` and ``SKIPPED``; warns (one line) how many
    undecodable images were skipped: when the count first grows and then each time it
    doubles, or once at the end (``at_end``, for one eval pass)."""
    reported = skipped = 0
    for batch in tfds.as_numpy(batches.prefetch(AUTOTUNE).with_options(_options())):
        batch.pop(POSITION, None)
        if SKIPPED in batch:
            skipped = max(skipped, int(batch.pop(SKIPPED).max()))
            if not at_end and skipped > reported and skipped >= 2 * reported:
                _warn_skipped(skipped, what, "so far")
                reported = skipped
        yield batch
    if at_end and skipped:
        _warn_skipped(skipped, what, "in this pass")


def _warn_skipped(count: int, what: str, when: str) -> None:
    logging.warning(
        "Skipped %d undecodable image%s in %s %s (dataset.on_decode_error='skip'; "
        "'fail' stops instead).", count, "" if count == 1 else "s", what, when,
    )  # fmt: skip


def _should_cache(config, num_examples: int, element_spec) -> bool:
    if config.cache is not None:
        return bool(config.cache)
    example_bytes = sum(s.shape.num_elements() * s.dtype.size for s in element_spec.values())
    return num_examples * example_bytes <= config.cache_max_bytes


def _epoch_seed_base(seed: int, process_index: int, process_count: int) -> int:
    state = np.random.SeedSequence([seed % 2**32, process_index, process_count])
    return int(state.generate_state(1, np.uint32)[0])


def _image_shape(spec: DatasetSpec, split, chain: Chain) -> tuple[int, int, int]:
    records, to_example = _reader(spec, split, chain)
    prefix, suffix = _stages(chain, to_example, 0)
    return tuple(int(d) for d in _output_spec(spec, records, prefix, suffix)["image"].shape)


def dataset_metadata(dataset: Dataset) -> DatasetMetadata:
    """Split sizes (whole splits, all hosts), preprocessed image shape, class count."""
    spec = resolve(dataset)
    if spec.metadata_cache is not None:
        return spec.metadata_cache
    config, builder = spec.config, spec.builder
    image_shape = _image_shape(spec, config.train_split, spec.train_chain)
    eval_shape = _image_shape(spec, config.eval_split, spec.eval_chain)
    if eval_shape != image_shape:
        raise ValueError(
            f"Dataset {spec.name!r}: the train chain gives images {image_shape} but the "
            f"eval chain {eval_shape}; the model sees both."
        )
    num_classes = config.num_classes
    label_feature = _feature(builder.info.features, config.label_key)
    if num_classes is None and isinstance(label_feature, tfds.features.ClassLabel):
        num_classes = label_feature.num_classes
    spec.metadata_cache = DatasetMetadata(
        num_train=builder.info.splits[config.train_split].num_examples,
        num_eval=builder.info.splits[config.eval_split].num_examples,
        image_shape=image_shape,
        num_classes=num_classes,
    )
    return spec.metadata_cache


def create_train_iterator(
    dataset: Dataset,
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
    spec = resolve(dataset)
    config = spec.config
    index, count = _host(process_index, process_count)
    batch_size = _host_batch_size(global_batch_size, count)
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0; got {start_step}.")
    split = tfds.split_for_jax_process(
        config.train_split, process_index=index, process_count=count, drop_remainder=True
    )
    num_examples = spec.builder.info.splits[split].num_examples
    if num_examples == 0:
        raise ValueError(f"Split {config.train_split!r} has no examples for host {index}/{count}.")
    seed_base = _epoch_seed_base(seed, index, count)
    start_epoch, offset = divmod(start_step * batch_size, num_examples)
    examples = _train_examples(spec, split, num_examples, seed_base, start_epoch, offset)
    batches = examples.batch(batch_size, drop_remainder=True)
    host_batches = _host_batches(batches, f"{spec.name} {config.train_split}", at_end=False)
    if not (spec.augment and config.augment_in_pipeline):
        return host_batches
    pca_basis = _data_pca_basis(spec) if augment.needs_data_pca(config.augment) else None
    return _augmented(host_batches, spec, pca_basis, seed=seed, host=index, step=start_step)


def _train_examples(spec, split, num_examples, seed_base, start_epoch, offset):
    """The host's example stream from epoch ``start_epoch``, example ``offset`` on."""
    chain, config = spec.train_chain, spec.config
    records, to_example = _reader(spec, split, chain)
    prefix, suffix = _stages(chain, to_example, seed_base)
    cache = _should_cache(config, num_examples, _output_spec(spec, records, prefix, suffix))
    skip = config.on_decode_error == "skip"
    if cache:
        records = records.enumerate().map(
            lambda i, r: {**prefix(r), POSITION: i}, num_parallel_calls=AUTOTUNE
        )
        records = (_skip_undecodable(records, 0) if skip else records).cache()
    shuffle_buffer = max(1, min(int(config.shuffle_buffer), num_examples))

    def epoch(e):
        shuffled = records.shuffle(shuffle_buffer, seed=seed_base + e * _EPOCH_SEED_STRIDE)
        return shuffled.enumerate(start=e * num_examples)

    # Augmentation works on 0..1 images, so the pixel ops then follow it (in JAX).
    finish = _finish_batch(chain.pixel_ops, normalise=not spec.augment)

    @tf.autograph.experimental.do_not_convert  # plain TensorFlow ops, nothing to convert
    def per_example(position, record):
        example = record if cache else prefix(record)
        return {**finish(suffix(example, position)), POSITION: position}

    examples = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(epoch)
    examples = examples.skip(offset).map(per_example, num_parallel_calls=AUTOTUNE)
    if skip and not (cache and not chain.split_at_first_random()[1]):
        examples = _skip_undecodable(examples, start_epoch * num_examples + offset)
    return examples


PCA_EXAMPLES = 2048


def _data_pca_basis(spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    """RGB eigen-decomposition of the first PCA_EXAMPLES training images through the
    eval chain (deterministic; the same on all hosts)."""
    records, to_example = _reader(spec, spec.config.train_split, spec.eval_chain)
    prefix, suffix = _stages(spec.eval_chain, to_example, 0)
    position = tf.constant(0, tf.int64)
    images = records.take(PCA_EXAMPLES).map(lambda r: suffix(prefix(r), position)["image"])
    return rgb_pca(next(iter(tfds.as_numpy(images.batch(PCA_EXAMPLES)))) / 255.0)


_AUGMENTERS: dict[str, Callable] = {}


def augment_key(seed: jax.Array | int, index: jax.Array | int, step: jax.Array | int) -> jax.Array:
    """The augmentation key of batch ``step`` on host ``index`` (in the pipeline) or on
    device ``index`` (in the train step): ``fold_in(fold_in(key(seed), index), step)``."""
    seed = jax.numpy.asarray(seed, jax.numpy.uint32)
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), index), step)


BatchTransform = Callable[[dict[str, jax.Array], jax.Array, jax.Array], dict[str, jax.Array]]


def device_augment(dataset: Dataset, *, seed: int) -> BatchTransform | None:
    """With ``dataset.augment_in_pipeline=False`` (and an ``augment`` spec), the train step's
    ``transform(batch, step, device_index) -> batch``: ``dataset.augment`` then the train
    chain's pixel ops, keyed by :func:`augment_key` ``(seed, device_index, step)``, on
    images the pipeline left in 0..1. It is the pipeline's own augmenter, so a step on one
    device sees the same batch as with ``augment_in_pipeline=True`` on one host.
    ``None`` when there is nothing to do on device.
    """
    spec = resolve(dataset)
    if spec.config.augment_in_pipeline or not spec.augment:
        return None
    pca_basis = _data_pca_basis(spec) if augment.needs_data_pca(spec.config.augment) else None
    batch_augment = augment.batch_augment_from_config(spec, pca_basis)
    seed = seed % 2**32

    def transform(batch, step, device_index):
        return batch_augment(augment_key(seed, device_index, step), batch)

    return transform


def _augment_and_normalise_fn(spec: DatasetSpec, pca_basis) -> Callable:
    """The jitted ``(batch, seed, host, step) -> batch`` for ``spec``; compiled functions
    are reused across iterators with the same augmentation (unless the PCA basis is data)."""
    config = spec.config
    pixel = tuple(str(op) for op in spec.train_chain.pixel_ops)
    cache_key = repr((config.augment, config.landmark_flip_permutation, pixel))
    if pca_basis is None and cache_key in _AUGMENTERS:
        return _AUGMENTERS[cache_key]
    batch_augment = augment.batch_augment_from_config(spec, pca_basis)

    @jax.jit
    def augment_and_normalise(batch, seed, host, step):
        return batch_augment(augment_key(seed, host, step), batch)

    if pca_basis is None:
        _AUGMENTERS[cache_key] = augment_and_normalise
    return augment_and_normalise


def _augmented(
    batches: Iterable[dict[str, np.ndarray]],
    spec: DatasetSpec,
    pca_basis,
    *,
    seed: int,
    host: int,
    step: int,
) -> Iterator[dict[str, np.ndarray]]:
    """Applies ``dataset.augment`` (then the pixel ops) to each batch with jitted JAX on
    the host CPU; batch ``k`` uses the key ``fold_in(fold_in(key(seed), host), k)``, so
    a resumed run draws the same augmentations."""
    augment_and_normalise = _augment_and_normalise_fn(spec, pca_basis)
    cpu = jax.local_devices(backend="cpu")[0]
    seed, host = (jax.device_put(np.uint32(v % 2**32), cpu) for v in (seed, host))
    batches = iter(batches)

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
    dataset: Dataset,
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
    spec = resolve(dataset)
    config, chain = spec.config, spec.eval_chain
    index, count = _host(process_index, process_count)
    batch_size = _host_batch_size(global_batch_size, count)
    shards = [
        tfds.split_for_jax_process(config.eval_split, process_index=i, process_count=count)
        for i in range(count)
    ]
    sizes = [spec.builder.info.splits[shard].num_examples for shard in shards]
    num_batches = math.ceil(max(sizes) / batch_size)
    if num_batches == 0:
        raise ValueError(f"Split {config.eval_split!r} has no examples.")
    records, to_example = _reader(spec, shards[index], chain)
    prefix, suffix = _stages(chain, to_example, 0)
    _output_spec(spec, records, prefix, suffix)

    finish = _finish_batch(chain.pixel_ops)

    @tf.autograph.experimental.do_not_convert  # plain TensorFlow ops, nothing to convert
    def eval_example(position, record):
        example = finish(suffix(prefix(record), position))
        return {**example, "mask": tf.constant(1.0, tf.float32), POSITION: position}

    examples = records.enumerate().map(eval_example, num_parallel_calls=AUTOTUNE)
    if config.on_decode_error == "skip":
        examples = _skip_undecodable(examples, 0)
    padding = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), examples.element_spec)
    # Padding to the same number of full batches on every host (skipped images too).
    examples = examples.concatenate(tf.data.Dataset.from_tensors(padding).repeat())
    batches = examples.take(num_batches * batch_size).batch(batch_size, drop_remainder=True)
    return _host_batches(batches, f"{spec.name} {config.eval_split}", at_end=True)


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
        if info.tf_dtype == tf.string:
            return tf.fill(shape, "")
        return tf.zeros(shape, info.tf_dtype)

    infos = features.get_tensor_info()
    return {k: tf.nest.map_structure(zeros, v) for k, v in infos.items() if k != image_key}


def preprocess_images(images: list[np.ndarray], dataset: Dataset) -> np.ndarray:
    """Decoded images -> the eval split's model inputs ``float32 [B, H, W, C]``.

    ``images``: ``[h, w, c]`` uint8 (0..255) or float (0..1) arrays of any size. Each
    goes through the eval pipeline's own steps: the dataset's example function (its
    crop, e.g. LFW's centre), the eval chain (a leading decode op becomes the matching
    op on decoded images), scaling to 0..1 and the chain's pixel ops. Reads the
    dataset's feature description (its tfds builder's code; the dataset need not be
    on disk).
    """
    spec = resolve(dataset)
    config = spec.config
    # The feature description comes with the builder's code: no data needs to be on disk.
    features = get_builder(config, prepare=False).info.features
    chain = spec.eval_chain.for_decoded_images()
    declared = _feature(features, config.image_key)
    declared_shape = tuple(declared.shape) if declared is not None else (None, None, None)
    seed = tf.constant([0, 0], tf.int64)

    def prepare(image):
        example = {**_stand_in_example(features, config.image_key), config.image_key: image}
        example = dict(spec.example_fn(example, config))
        return apply_example_ops(chain.example_ops, example, seed)["image"]

    traced: dict[tuple, Callable] = {}
    prepared = []
    for i, image in enumerate(images):
        image = _as_uint8_image(image, i)
        # The image shape the eval pipeline's graph knows (dynamic where the feature is),
        # so the resize decisions are the same as for the eval split.
        known = zip(declared_shape[:2], image.shape[:2], strict=True)
        shape = (*[d if d == n else None for d, n in known], image.shape[2])
        if shape not in traced:
            signature = [tf.TensorSpec(shape, tf.uint8)]
            traced[shape] = tf.function(prepare, input_signature=signature)
        prepared.append(traced[shape](tf.constant(image)))
    if not prepared:
        raise ValueError("preprocess_images needs at least one image.")
    shapes = {tuple(p.shape) for p in prepared}
    if len(shapes) > 1:
        raise ValueError(
            f"preprocessed images differ in shape {sorted(shapes)}; end the eval chain "
            "with a resize or crop (or set dataset.image_size)."
        )
    return _finish_batch(chain.pixel_ops)({"image": tf.stack(prepared)})["image"].numpy()
