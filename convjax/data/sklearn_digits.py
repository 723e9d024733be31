"""`sklearn_digits`: scikit-learn's 1,797 real 8x8 handwritten digits as a tfds dataset.

The digits ship with scikit-learn, so building this dataset needs no network::

    builder = tfds.builder("sklearn_digits", data_dir=...)   # after `import convjax.data`
    builder.download_and_prepare()

Features: ``image`` uint8 [32, 32, 1] (the 0..16 grid scaled to 0..255 and upsampled
8x8 -> 32x32 with bicubic interpolation), ``label`` ClassLabel(10), ``index`` int64
(the row in ``sklearn.datasets.load_digits()``). Splits: ``train`` (1,438) and ``test``
(359), a fixed stratified 80/20 split: within every class the indices are permuted
by ``numpy.random.default_rng(0)`` and the first 20 % (rounded) go to ``test``.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from convjax.data.splits import stratified_split

IMAGE_SIZE = 32
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def digit_split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """labels: [N] int -> {'train': sorted indices, 'test': sorted indices}, stratified."""
    return stratified_split(labels, TEST_FRACTION, SPLIT_SEED)


def upsample_digit(grid: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """grid: [8, 8] float in 0..16 -> uint8 [size, size, 1] in 0..255 (bicubic)."""
    scaled = Image.fromarray((grid.astype(np.float32) * (255.0 / 16.0)), mode="F")
    resized = np.asarray(scaled.resize((size, size), Image.Resampling.BICUBIC))
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)[:, :, None]


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's bundled 8x8 handwritten digits, upsampled to 32x32 grayscale."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "32x32 bicubic, stratified 80/20 split with seed 0."}

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "tfrecord")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                    "index": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # The data ships with scikit-learn.
        from sklearn.datasets import load_digits

        digits = load_digits()
        splits = digit_split_indices(digits.target)
        return {
            name: self._generate_examples(digits.images, digits.target, indices)
            for name, indices in splits.items()
        }

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray):
        for i in indices:
            yield (
                int(i),
                {
                    "image": upsample_digit(images[i]),
                    "label": int(labels[i]),
                    "index": int(i),
                },
            )
