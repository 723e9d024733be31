"""The sklearn_digits tfds builder: real scikit-learn digits, 32x32, fixed stratified split."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy import ndimage
from sklearn.datasets import load_digits

import convjax.data  # noqa: F401  (registers sklearn_digits)
from convjax.data.sklearn_digits import digit_split_indices


@pytest.fixture(scope="module")
def digits_builder(tmp_path_factory):
    data_dir = tmp_path_factory.getbasetemp() / "tfds"  # Shared by the data test modules.
    builder = tfds.builder("sklearn_digits", data_dir=str(data_dir))
    builder.download_and_prepare()
    return builder


@pytest.fixture(scope="module")
def splits(digits_builder):
    """{'train': dict of numpy arrays, 'test': ...} read straight from the tfds files."""
    return {
        name: tfds.as_numpy(digits_builder.as_dataset(split=name, batch_size=-1))
        for name in ("train", "test")
    }


def test_features_and_counts(digits_builder, splits):
    info = digits_builder.info
    assert info.file_format == tfds.core.FileFormat.TFRECORD
    assert info.features["label"].num_classes == 10
    assert info.splits["train"].num_examples + info.splits["test"].num_examples == 1797
    for name, arrays in splits.items():
        n = info.splits[name].num_examples
        assert arrays["image"].shape == (n, 32, 32, 1) and arrays["image"].dtype == np.uint8
        assert arrays["label"].shape == (n,)
        assert set(np.unique(arrays["label"])) == set(range(10))
    # The strokes are saturated somewhere and the background is black.
    assert splits["train"]["image"].max() == 255 and splits["train"]["image"].min() == 0


def test_split_is_disjoint_covering_and_stratified(splits):
    digits = load_digits()
    train, test = splits["train"]["index"], splits["test"]["index"]
    assert len(np.intersect1d(train, test)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
    for label in range(10):
        class_size = np.sum(digits.target == label)
        in_test = np.sum(digits.target[test] == label)
        assert abs(in_test - 0.2 * class_size) <= 0.5, (label, in_test, class_size)
    # The stored split is the documented seeded one, so a rebuild gives the same split.
    np.testing.assert_array_equal(np.sort(test), digit_split_indices(digits.target)["test"])


def test_images_are_the_sklearn_digits_upsampled(splits):
    digits = load_digits()
    index = np.concatenate([arrays["index"] for arrays in splits.values()])
    labels = np.concatenate([arrays["label"] for arrays in splits.values()])
    images = np.concatenate([arrays["image"][..., 0] for arrays in splits.values()])
    np.testing.assert_array_equal(labels, digits.target[index])
    # Independent upsampling of all 1,797 digits: scipy's cubic spline, 8x8 -> 32x32.
    reference = ndimage.zoom(
        digits.images * (255.0 / 16.0), (1, 4, 4), order=3, mode="nearest", grid_mode=True
    )
    images = images.reshape(len(images), -1).astype(np.float64)
    reference = reference.reshape(len(reference), -1)
    # Each image is within a few grey levels of its own digit's upsampling (about 6 on
    # average; another digit's is about 60 away) ...
    assert np.mean(np.abs(images - reference[index])) < 10.0
    # ... and nearer to it than to any other of the 1,797.
    distances = (images**2).sum(1)[:, None] + (reference**2).sum(1)[None] - 2 * images @ reference.T
    np.testing.assert_array_equal(distances.argmin(axis=1), index)
