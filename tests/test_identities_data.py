"""The `identities` tfds builder: disjoint identities, determinism, the pipeline path."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

import convjax.data  # noqa: F401  (registers the builders)
from convjax.data import pipeline
from convjax.data.identities import IdentitiesConfig, draw_face_split

TINY = IdentitiesConfig(
    name="tiny", identities=(5, 3, 4), images_per_identity=(4, 3, 3), image_size=24, seed=3
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def load_split(builder, split):
    examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
    order = np.argsort([e["identity"] * 1000 + e["index"] for e in examples])
    images = np.stack([examples[i]["image"] for i in order])
    return images, np.array([examples[i]["identity"] for i in order])


@pytest.fixture(scope="module")
def tiny(data_dir):
    builder = tfds.builder("identities", config=TINY, data_dir=data_dir)
    builder.download_and_prepare()
    return {split: load_split(builder, split) for split in ("train", "validation", "test")}


def test_splits_have_disjoint_identities_and_the_configured_sizes(tiny):
    ids = {split: set(labels.tolist()) for split, (_, labels) in tiny.items()}
    assert [len(ids[s]) for s in ("train", "validation", "test")] == [5, 3, 4]
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    assert [len(tiny[s][1]) for s in ("train", "validation", "test")] == [20, 9, 12]
    assert tiny["train"][0].shape[1:] == (24, 24, 3) and tiny["train"][0].dtype == np.uint8


def test_build_is_deterministic_and_matches_the_drawing_function(tiny, tmp_path):
    images, labels = draw_face_split(TINY, "test")
    np.testing.assert_array_equal(tiny["test"][0], images)  # PNG is lossless
    np.testing.assert_array_equal(tiny["test"][1], labels)
    again, _ = draw_face_split(TINY, "test")
    np.testing.assert_array_equal(images, again)
    other_seed, _ = draw_face_split(
        IdentitiesConfig(name="o", **{**vars_of(TINY), "seed": 4}), "test"
    )
    assert np.abs(other_seed.astype(int) - images).mean() > 10


def vars_of(config):
    return {
        "identities": config.identities,
        "images_per_identity": config.images_per_identity,
        "image_size": config.image_size,
        "seed": config.seed,
    }


def test_identities_vary_within_and_differ_between(tiny):
    images, labels = tiny["train"]
    x = images.astype(np.float64) / 255.0
    # Within one identity the images are not copies (pose, light, background, noise).
    for identity in np.unique(labels):
        group = x[labels == identity]
        assert np.abs(group[0] - group[1]).mean() > 0.02
    # The face region (centre crop) of an identity is closer to itself on average
    # than to other identities: a learnable signal exists.
    centre = x[:, 8:16, 8:16].reshape(len(x), -1)
    d = ((centre[:, None] - centre[None]) ** 2).mean(-1)
    same = labels[:, None] == labels[None]
    off_diag = ~np.eye(len(x), dtype=bool)
    assert d[same & off_diag].mean() < d[~same].mean()


def test_digits_config_splits_digit_classes(data_dir):
    builder = tfds.builder("identities/digits", data_dir=data_dir)
    builder.download_and_prepare()
    for split, classes in {
        "train": {0, 1, 2, 3, 4},
        "validation": {5, 6},
        "test": {7, 8, 9},
    }.items():
        labels = [int(e["identity"]) for e in tfds.as_numpy(builder.as_dataset(split=split))]
        assert set(labels) == classes
    assert builder.info.features["image"].shape == (32, 32, 1)
    assert sum(builder.info.splits[s].num_examples for s in ("train", "validation", "test")) == 1797


def test_pipeline_reads_identities_through_the_example_function(data_dir):
    dataset = {"name": "identities/faces_small", "data_dir": data_dir, "eval_split": "test"}
    meta = pipeline.dataset_metadata(dataset)
    assert meta.image_shape == (32, 32, 3) and meta.num_eval == 32
    batches = list(pipeline.create_eval_iterator(dataset, global_batch_size=16))
    labels = np.concatenate([b["label"] for b in batches])
    assert np.all(np.diff(labels) >= 0)  # files are identity-major
    assert labels.dtype == np.int32 and set(labels.tolist()) == set(range(18, 26))
    assert batches[0]["image"].dtype == np.float32 and batches[0]["image"].max() <= 1.0
