"""The tfds input pipeline: order, resume, eval padding, host sharding, preprocessing."""

import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from convjax import data
from convjax.data import pipeline
from convjax.data.augment import batch_augment_from_config
from convjax.data.examples import register_example_fn
from convjax.train.parallel import get_strategy
from convjax.train.state import TrainState

NUM_TRAIN, NUM_TEST = 1438, 359


@register_example_fn("test_indexed_digits")
def indexed_digits(example, config):
    """The default image/label plus the sklearn row, so tests can see which example is where."""
    return {
        "image": example["image"],
        "label": tf.cast(example["label"], tf.int32),
        "index": tf.cast(example["index"], tf.int32),
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.getbasetemp() / "tfds"  # Shared by the data test modules.
    tfds.builder("sklearn_digits", data_dir=str(data_dir)).download_and_prepare()
    return str(data_dir)


@pytest.fixture(scope="module")
def stored(data_dir):
    """{'train'/'test': numpy arrays straight from the tfds files}, the reference."""
    builder = tfds.builder("sklearn_digits", data_dir=data_dir)
    return {
        name: tfds.as_numpy(builder.as_dataset(split=name, batch_size=-1))
        for name in ("train", "test")
    }


def make_config(data_dir, **overrides):
    config = data.default_dataset_config()
    config.data_dir = data_dir
    config.example_fn = "test_indexed_digits"
    config.update(overrides)
    return config


def take(iterator, n):
    return list(itertools.islice(iterator, n))


def test_metadata(data_dir):
    meta = data.dataset_metadata(make_config(data_dir))
    assert meta == data.DatasetMetadata(
        num_train=NUM_TRAIN, num_eval=NUM_TEST, image_shape=(32, 32, 1), num_classes=10
    )
    meta = data.dataset_metadata(make_config(data_dir, image_size=(24, 20), channels=3))
    assert meta.image_shape == (24, 20, 3)


def test_train_batches_are_the_stored_examples_scaled(data_dir, stored):
    (batch,) = take(
        data.create_train_iterator(make_config(data_dir), global_batch_size=32, seed=0), 1
    )
    assert batch["image"].shape == (32, 32, 32, 1) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (32,)
    row = {int(i): k for k, i in enumerate(stored["train"]["index"])}
    rows = [row[int(i)] for i in batch["index"]]
    np.testing.assert_allclose(batch["image"], stored["train"]["image"][rows] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(batch["label"], stored["train"]["label"][rows])


def test_normalisation_resize_and_channels(data_dir):
    plain = next(data.create_train_iterator(make_config(data_dir), global_batch_size=8, seed=3))
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    config = make_config(data_dir, channels=3, mean=mean, std=std)
    normalised = next(data.create_train_iterator(config, global_batch_size=8, seed=3))
    np.testing.assert_array_equal(plain["index"], normalised["index"])
    expected = (np.repeat(plain["image"], 3, axis=-1) - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(normalised["image"], expected, atol=1e-5)
    small = next(
        data.create_train_iterator(
            make_config(data_dir, image_size=(16, 16), resize_method="area"),
            global_batch_size=8,
            seed=3,
        )
    )
    # Area resizing by 2 is the mean of each 2x2 block (up to uint8 rounding).
    blocks = plain["image"].reshape(8, 16, 2, 16, 2, 1).mean(axis=(2, 4))
    np.testing.assert_allclose(small["image"], blocks, atol=0.5 / 255 + 1e-6)


def test_same_seed_same_batches_different_seed_different(data_dir):
    config = make_config(data_dir)
    first = take(data.create_train_iterator(config, global_batch_size=16, seed=7), 3)
    again = take(data.create_train_iterator(config, global_batch_size=16, seed=7), 3)
    other = take(data.create_train_iterator(config, global_batch_size=16, seed=8), 3)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["index"], b["index"])
        np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(first[0]["index"], other[0]["index"])


@pytest.mark.parametrize("cache", [True, False])
def test_epochs_are_permutations_and_resume_continues_the_sequence(data_dir, cache):
    config = make_config(data_dir, cache=cache, shuffle_buffer=NUM_TRAIN)
    batch_size = 100
    steps = 2 * NUM_TRAIN // batch_size + 2  # Crosses two epoch boundaries.
    full = take(data.create_train_iterator(config, global_batch_size=batch_size, seed=1), steps)
    stream = np.concatenate([b["index"] for b in full])
    first_epoch, second_epoch = stream[:NUM_TRAIN], stream[NUM_TRAIN : 2 * NUM_TRAIN]
    assert sorted(first_epoch) == sorted(second_epoch) and len(set(first_epoch)) == NUM_TRAIN
    assert not np.array_equal(first_epoch, second_epoch)  # Reshuffled every epoch.
    for start in (5, 14, steps - 3):  # Inside epoch 0, at the end of epoch 0, in epoch 1.
        resumed = take(
            data.create_train_iterator(
                config, global_batch_size=batch_size, seed=1, start_step=start
            ),
            steps - start,
        )
        for a, b in zip(full[start:], resumed, strict=True):
            np.testing.assert_array_equal(a["index"], b["index"])
            np.testing.assert_array_equal(a["image"], b["image"])


def test_resume_far_ahead_skips_epochs_without_reading_them(data_dir):
    config = make_config(data_dir, cache=False)
    begin = time.perf_counter()
    # 10^6 steps of 64 is ~44,500 epochs of the digits: only the last one is read.
    iterator = data.create_train_iterator(config, global_batch_size=64, seed=0, start_step=10**6)
    batch = next(iterator)
    assert time.perf_counter() - begin < 10.0
    assert batch["image"].shape == (64, 32, 32, 1)


@pytest.mark.parametrize("hosts", [1, 3])
def test_eval_covers_every_example_once_with_padding_masked(data_dir, stored, hosts):
    config = make_config(data_dir)
    global_batch = 48
    per_host = [
        list(
            data.create_eval_iterator(
                config, global_batch_size=global_batch, process_index=i, process_count=hosts
            )
        )
        for i in range(hosts)
    ]
    assert len({len(batches) for batches in per_host}) == 1  # Same number of batches.
    seen = []
    for batches in per_host:
        for batch in batches:
            assert batch["image"].shape == (global_batch // hosts, 32, 32, 1)
            assert batch["mask"].dtype == np.float32
            real = batch["mask"] == 1.0
            assert np.all((batch["mask"] == 0.0) | real)
            assert np.all(batch["image"][~real] == 0.0)
            seen.extend(batch["index"][real])
    np.testing.assert_array_equal(np.sort(seen), np.sort(stored["test"]["index"]))
    assert len(per_host[0]) == int(np.ceil(np.ceil(NUM_TEST / hosts) / (global_batch // hosts)))


def test_hosts_get_disjoint_covering_shards(data_dir):
    config = make_config(data_dir, shuffle_buffer=NUM_TRAIN)
    hosts, global_batch = 2, 2 * 719  # 1,438 examples: one batch is one epoch per host.
    shards = [
        take(
            data.create_train_iterator(
                config, global_batch_size=global_batch, seed=0, process_index=i, process_count=hosts
            ),
            1,
        )[0]["index"]
        for i in range(hosts)
    ]
    assert all(len(set(shard)) == 719 for shard in shards)
    assert not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) == set(range(1797)) - set(
        tfds.as_numpy(
            tfds.builder("sklearn_digits", data_dir=data_dir).as_dataset("test", batch_size=-1)
        )["index"]
    )


def test_clear_errors(data_dir):
    with pytest.raises(ValueError, match="sklearn_digits"):
        data.dataset_metadata(make_config(data_dir, name="no_such_dataset"))
    with pytest.raises(ValueError, match="multiple of the number of hosts"):
        data.create_train_iterator(
            make_config(data_dir), global_batch_size=9, seed=0, process_count=2, process_index=0
        )
    with pytest.raises(ValueError, match="channels must be 1, 3 or None"):
        data.create_eval_iterator(make_config(data_dir, channels=2), global_batch_size=8)
    with pytest.raises(ValueError, match="registered"):
        data.create_eval_iterator(make_config(data_dir, example_fn="nope"), global_batch_size=8)
    with pytest.raises(ValueError, match="image_size"):
        data.dataset_metadata(make_config(data_dir, image_size=(32,)))


def test_augmented_batches_are_deterministic_and_resume_exactly(data_dir):
    config = make_config(data_dir, augment="mirror, random_crop(pad=3)", mean=0.2, std=0.5)
    first = take(data.create_train_iterator(config, global_batch_size=16, seed=4), 4)
    resumed = take(
        data.create_train_iterator(config, global_batch_size=16, seed=4, start_step=2), 2
    )
    for a, b in zip(first[2:], resumed, strict=True):
        np.testing.assert_array_equal(a["index"], b["index"])
        np.testing.assert_array_equal(a["image"], b["image"])
    plain = take(
        data.create_train_iterator(make_config(data_dir), global_batch_size=16, seed=4), 1
    )[0]
    np.testing.assert_array_equal(plain["index"], first[0]["index"])  # Same order ...
    pixels = first[0]["image"] * 0.5 + 0.2  # ... normalised after augmenting ...
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert not np.allclose(pixels, plain["image"])  # ... and the images did change:
    # each is its plain image mirrored or not and shifted by at most 3 pixels.
    for augmented, original in zip(pixels[..., 0], plain["image"][..., 0], strict=True):
        candidates = [original, original[:, ::-1]]
        assert any(
            np.allclose(
                augmented[3:-3, 3:-3],
                np.roll(c, (dy, dx), axis=(0, 1))[3:-3, 3:-3],
                atol=1e-5,
            )
            for c in candidates
            for dy in range(-3, 4)
            for dx in range(-3, 4)
        )
    # On device instead: the pipeline yields 0..1 images, the config's augmenter (with the
    # pipeline's key for that step) gives the same batch.
    config.augment_in_pipeline = False
    raw = take(data.create_train_iterator(config, global_batch_size=16, seed=4), 2)[1]
    np.testing.assert_array_equal(
        raw["image"],
        take(data.create_train_iterator(make_config(data_dir), global_batch_size=16, seed=4), 2)[1][
            "image"
        ],
    )
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(4), 0), 1)
    on_device = jax.jit(batch_augment_from_config(config))(key, raw)
    np.testing.assert_allclose(on_device["image"], first[1]["image"], atol=1e-6)
    # Evaluation is never augmented.
    evaluated = next(data.create_eval_iterator(config, global_batch_size=16))
    reference = next(data.create_eval_iterator(make_config(data_dir), global_batch_size=16))
    np.testing.assert_allclose(evaluated["image"] * 0.5 + 0.2, reference["image"], atol=1e-6)


def test_pca_lighting_from_the_data(data_dir):
    config = make_config(data_dir, channels=3, augment="pca_lighting(0.1, eigen='data')")
    batch = next(data.create_train_iterator(config, global_batch_size=8, seed=0))
    assert batch["image"].shape == (8, 32, 32, 3)
    assert batch["image"].min() >= 0.0 and batch["image"].max() <= 1.0
    with pytest.raises(ValueError, match="Unknown augmentation 'flip'"):
        data.create_train_iterator(
            make_config(data_dir, augment="flip"), global_batch_size=8, seed=0
        )


def _spy_loss(params, model_state, batch, rng):
    """A loss that keeps the batch images it saw, bit-cast to int32 (integer model state
    is not averaged over devices, so each device keeps its own)."""
    del model_state, rng
    loss = jnp.sum(params["w"] ** 2)
    return loss, ({}, {"seen": jax.lax.bitcast_convert_type(batch["image"], jnp.int32)})


def _spy_state(per_device_images):
    tx = optax.sgd(0.1)
    params = {"w": np.zeros((), np.float32)}
    seen = np.zeros(per_device_images.shape, np.int32)
    return TrainState.create(
        params=params, tx=tx, rng=jax.random.PRNGKey(0), model_state={"seen": seen}
    )


def _seen(state):
    return np.asarray(
        jax.lax.bitcast_convert_type(jax.device_get(state.model_state["seen"]), jnp.float32)
    )


def test_augment_on_device_gives_the_step_the_pipelines_batch(data_dir):
    spec = dict(augment="mirror, random_crop(pad=3), colour_shift(0.1)", mean=0.2, std=0.5)
    in_pipeline = take(
        data.create_train_iterator(make_config(data_dir, **spec), global_batch_size=8, seed=5), 2
    )
    config = make_config(data_dir, augment_in_pipeline=False, **spec)
    raw = take(data.create_train_iterator(config, global_batch_size=8, seed=5), 2)
    assert 0.0 <= raw[0]["image"].min() and raw[0]["image"].max() <= 1.0  # 0..1, as read
    assert pipeline.device_augment(make_config(data_dir, **spec), seed=5) is None
    transform = pipeline.device_augment(config, seed=5)

    # One device (jit): step k sees exactly the pipeline's augmented, normalised batch k.
    strategy = get_strategy("jit")
    step = strategy.compile_train_step(_spy_loss, transform)
    state = strategy.put_state(_spy_state(raw[0]["image"]))
    for k in range(2):
        batch = {key: raw[k][key] for key in ("image", "label")}
        state, _ = step(state, strategy.put_batch(batch))
        np.testing.assert_array_equal(_seen(state), in_pipeline[k]["image"])
        assert not np.allclose(_seen(state), (raw[k]["image"] - 0.2) / 0.5)  # augmented
    # Without the transform the step would see the raw 0..1 batch.
    plain = strategy.compile_train_step(_spy_loss)
    state, _ = plain(strategy.put_state(_spy_state(raw[0]["image"])), strategy.put_batch(batch))
    np.testing.assert_array_equal(_seen(state), raw[1]["image"])

    # Four devices (pmap): device d augments its share with the key (seed, d, step).
    strategy = get_strategy("pmap")
    step = strategy.compile_train_step(_spy_loss, transform)
    state = strategy.put_state(_spy_state(raw[0]["image"][:2]))
    state, _ = step(state, strategy.put_batch({"image": raw[0]["image"], "label": raw[0]["label"]}))
    augment = jax.jit(batch_augment_from_config(data.resolve_dataset_config(config)))
    for d, seen in enumerate(_seen(state)):
        share = {"image": raw[0]["image"][2 * d : 2 * d + 2]}
        expected = augment(jax.random.fold_in(jax.random.fold_in(jax.random.key(5), d), 0), share)
        np.testing.assert_allclose(seen, expected["image"], atol=1e-6)

    # Evaluation batches are normalised (and never augmented) either way.
    evaluated = next(data.create_eval_iterator(config, global_batch_size=16))
    in_tf = next(data.create_eval_iterator(make_config(data_dir, **spec), global_batch_size=16))
    unnormalised = next(data.create_eval_iterator(make_config(data_dir), global_batch_size=16))
    np.testing.assert_array_equal(evaluated["image"], in_tf["image"])
    np.testing.assert_allclose(evaluated["image"], (unnormalised["image"] - 0.2) / 0.5, atol=1e-6)


@register_example_fn("test_cropped_digits")
def cropped_digits(example, config):
    """The central 6x6 of the 8x8 digit: an example function that crops."""
    return {
        "image": tf.image.crop_to_bounding_box(example["image"], 1, 1, 6, 6),
        "label": tf.cast(example["label"], tf.int32),
    }


@pytest.mark.parametrize(
    "overrides",
    [
        dict(image_size=(32, 32), mean=0.5, std=0.25),
        dict(
            example_fn="test_cropped_digits",
            image_size=(20, 28),
            resize_mode="center_crop",
            resize_method="bicubic",
            channels=3,
            mean=(0.4, 0.5, 0.6),
            std=(0.2, 0.3, 0.4),
        ),
    ],
)
def test_preprocess_images_matches_the_eval_pipeline(data_dir, stored, overrides):
    config = make_config(data_dir, **overrides)
    config.example_fn = overrides.get("example_fn")
    evaluated = next(data.create_eval_iterator(config, global_batch_size=16))["image"]
    raw = stored["test"]["image"][:16]  # uint8 [16, 8, 8, 1], the eval split's first 16
    np.testing.assert_array_equal(pipeline.preprocess_images(list(raw), config), evaluated)
    as_float = [image.astype(np.float32) / 255.0 for image in raw]
    np.testing.assert_array_equal(pipeline.preprocess_images(as_float, config), evaluated)


def test_preprocess_images_rejects_bad_images(data_dir):
    config = make_config(data_dir, image_size=(32, 32))
    with pytest.raises(ValueError, match=r"images\[0\] must be \[H, W, C\]"):
        pipeline.preprocess_images([np.zeros((8, 8), np.uint8)], config)
    with pytest.raises(ValueError, match=r"images\[1\] is float .* must be in 0..1"):
        pipeline.preprocess_images([np.zeros((8, 8, 1)), np.full((8, 8, 1), 255.0)], config)
