"""P x K and pair samplers: balance, determinism, resume, host shards, the pipeline path."""

import numpy as np
import pytest

from convjax.data import samplers

# 7 identities with 1..7 images each (identity 0 has a single image: never drawn).
LABELS = np.repeat(np.arange(7), np.arange(1, 8))[np.random.default_rng(0).permutation(28)]


def test_pk_batches_are_identity_balanced_and_identity_major():
    s = samplers.PKSampler(LABELS, identities_per_batch=4, images_per_identity=3, seed=1)
    for step in range(20):
        index = s.batch_indices(step)
        groups = LABELS[index].reshape(4, 3)
        assert np.all(groups == groups[:, :1])  # K images of one identity, adjacent
        assert len(set(groups[:, 0])) == 4  # P different identities
        assert 0 not in groups  # a single-image identity has no positive
        for row, ids in zip(groups, index.reshape(4, 3), strict=True):
            if np.sum(LABELS == row[0]) >= 3:
                assert len(set(ids)) == 3  # distinct images when there are enough


def test_identity_with_fewer_than_k_images_repeats_images():
    labels = np.array([0, 0, 1, 1, 1, 1])
    s = samplers.PKSampler(labels, identities_per_batch=2, images_per_identity=4, seed=0)
    index = s.batch_indices(0).reshape(2, 4)
    for row in index:
        assert len(set(labels[row])) == 1
        assert set(row) <= set(np.flatnonzero(labels == labels[row[0]]))


def test_pk_sampling_is_a_function_of_seed_and_step():
    a = samplers.PKSampler(LABELS, 3, 2, seed=5)
    b = samplers.PKSampler(LABELS, 3, 2, seed=5)
    c = samplers.PKSampler(LABELS, 3, 2, seed=6)
    np.testing.assert_array_equal(a.batch_indices(11), b.batch_indices(11))
    assert any(not np.array_equal(a.batch_indices(s), c.batch_indices(s)) for s in range(5))


def test_pairs_are_half_same_half_different():
    s = samplers.PairSampler(LABELS, seed=3)
    first, second, same = s.pair_indices(step=2, num_pairs=200)
    assert same.sum() == 100
    np.testing.assert_array_equal(LABELS[first] == LABELS[second], same == 1)
    assert np.all(first[same == 1] != second[same == 1])  # two different images


def test_bad_sampler_arguments_are_clear_value_errors():
    with pytest.raises(ValueError, match="only 6 identities"):
        samplers.PKSampler(LABELS, identities_per_batch=7, images_per_identity=2, seed=0)
    with pytest.raises(ValueError, match="P and K"):
        samplers.PKSampler(LABELS, identities_per_batch=0, images_per_identity=2, seed=0)


@pytest.fixture(scope="module")
def faces_small(tmp_path_factory):
    import convjax.data.identities  # noqa: F401  (registers the builder)

    return {"name": "identities/faces_small", "data_dir": str(tmp_path_factory.mktemp("tfds"))}


def test_pk_iterator_resumes_and_shards_over_hosts(faces_small):
    kwargs = dict(global_batch_size=16, seed=0, images_per_identity=4)
    full = samplers.create_pk_train_iterator(faces_small, **kwargs)
    batches = [next(full) for _ in range(3)]
    assert batches[0]["image"].shape == (16, 32, 32, 3)
    assert batches[0]["image"].dtype == np.float32
    resumed = next(samplers.create_pk_train_iterator(faces_small, start_step=2, **kwargs))
    np.testing.assert_array_equal(resumed["image"], batches[2]["image"])
    hosts = [
        next(
            samplers.create_pk_train_iterator(
                faces_small, process_index=h, process_count=2, **kwargs
            )
        )
        for h in range(2)
    ]
    np.testing.assert_array_equal(np.concatenate([h["label"] for h in hosts]), batches[0]["label"])
    for h in hosts:  # each host holds whole identities: 2 x 4 images
        assert np.all(h["label"].reshape(2, 4) == h["label"].reshape(2, 4)[:, :1])
    pairs = next(samplers.create_pair_train_iterator(faces_small, global_batch_size=6, seed=0))
    assert pairs["image"].shape == (6, 2, 32, 32, 3)
    np.testing.assert_array_equal(pairs["same"], [1, 0, 1, 0, 1, 0])


def test_identity_split_makes_disjoint_identities_from_one_split(faces_small):
    spec = {
        "source": "train",
        "buckets": 10,
        "train": (0, 6),
        "validation": (6, 8),
        "test": (8, 10),
    }
    dataset = {**faces_small, "identity_split": spec}
    parts = {s: samplers.load_split(dataset, s)["label"] for s in ("train", "validation", "test")}
    everything = samplers.load_split(faces_small, "train")["label"]
    assert sum(len(p) for p in parts.values()) == len(everything)
    ids = {s: set(p.tolist()) for s, p in parts.items()}
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"] and all(ids.values())
    for split, (lo, hi) in [(s, spec[s]) for s in parts]:
        buckets = samplers.identity_bucket(parts[split], 10)
        assert np.all((buckets >= lo) & (buckets < hi))


def test_lfw_config_and_example_function():
    import tensorflow as tf

    from configs import facenet_lfw
    from convjax.data.identities import lfw_identities_example

    config = facenet_lfw.get_config()
    assert config.dataset.example_fn == "lfw_identities" and config.model == "embedding"
    image = tf.constant(np.random.default_rng(0).integers(0, 255, (250, 250, 3), np.uint8))
    out = lfw_identities_example({"image": image, "label": tf.constant("Ann_Smith")}, config)
    np.testing.assert_array_equal(out["image"].numpy(), image.numpy()[65:185, 65:185])
    again = lfw_identities_example({"image": image, "label": tf.constant("Ann_Smith")}, config)
    other = lfw_identities_example({"image": image, "label": tf.constant("Bob_Jones")}, config)
    assert out["label"].dtype == tf.int32 and int(out["label"]) == int(again["label"])
    assert int(out["label"]) != int(other["label"]) and int(out["label"]) >= 0
