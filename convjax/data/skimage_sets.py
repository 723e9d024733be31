"""scikit-image's bundled images as tfds datasets (no network).

``skimage_images``: photographs and textures for style transfer and edge detection,
one ``train`` split of :data:`SKIMAGE_IMAGE_NAMES` in that order. Features:
``image`` uint8 [H, W, 3] (sizes vary; grayscale images repeated to 3 channels),
``name`` text, ``label`` ClassLabel over the names, ``grayscale`` bool (the original
had one channel). Read one image by name with :func:`load_skimage_image`.

``lfw_subset``: scikit-image's 200 25x25 grayscale crops from Labeled Faces in the
Wild, 100 faces and 100 non-faces. Features: ``image`` uint8 [25, 25, 1],
``label`` ClassLabel(['non_face', 'face']), ``index`` int64 (position in
``skimage.data.lfw_subset()``). Splits: ``train`` (150) / ``test`` (50), stratified
with seed 0 (:func:`convjax.data.splits.stratified_split`).
"""

from __future__ import annotations

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from convjax.data.builders import get_builder
from convjax.data.splits import stratified_split

SKIMAGE_IMAGE_NAMES = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "colorwheel",
    "brick",
    "grass",
    "gravel",
    "coins",
    "moon",
    "clock",
    "page",
    "text",
    "cell",
)
LFW_CLASS_NAMES = ("non_face", "face")
LFW_TEST_FRACTION = 0.25


def skimage_image_rgb(name: str) -> np.ndarray:
    """``skimage.data.<name>()`` as uint8 [H, W, 3] (grayscale repeated)."""
    from skimage import data

    image = np.asarray(getattr(data, name)())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=-1)
    return image.astype(np.uint8)


class SkimageImages(tfds.core.GeneratorBasedBuilder):
    """scikit-image's bundled photographs and textures, RGB, at their own sizes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "17 images from skimage.data, grayscale repeated to RGB."}

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "tfrecord")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "name": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=SKIMAGE_IMAGE_NAMES),
                    "grayscale": tfds.features.Scalar(dtype=np.bool_),
                }
            ),
            homepage="https://scikit-image.org/docs/stable/api/skimage.data.html",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # The images ship with scikit-image.
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        from skimage import data

        for label, name in enumerate(SKIMAGE_IMAGE_NAMES):
            yield (
                name,
                {
                    "image": skimage_image_rgb(name),
                    "name": name,
                    "label": label,
                    "grayscale": np.ndim(getattr(data, name)()) == 2,
                },
            )


def load_skimage_image(name: str, data_dir: str | None = None) -> np.ndarray:
    """One image of ``skimage_images`` by name: uint8 [H, W, 3] (prepares the set if needed)."""
    if name not in SKIMAGE_IMAGE_NAMES:
        raise ValueError(f"Unknown skimage image {name!r}; valid: {list(SKIMAGE_IMAGE_NAMES)}.")
    builder = get_builder(
        ml_collections.ConfigDict({"name": "skimage_images", "data_dir": data_dir})
    )
    index = SKIMAGE_IMAGE_NAMES.index(name)
    # The set is one small shard written in generation order; filter to be safe.
    read_config = tfds.ReadConfig(try_autocache=False)
    dataset = builder.as_dataset(split="train", shuffle_files=False, read_config=read_config)
    for example in tfds.as_numpy(dataset):
        if example["label"] == index:
            return example["image"]
    raise RuntimeError(f"skimage_images in {builder.data_dir} lacks {name!r}; rebuild it.")


class LfwSubset(tfds.core.GeneratorBasedBuilder):
    """scikit-image's 100 face / 100 non-face 25x25 crops from LFW."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "uint8 25x25x1, stratified 150/50 split with seed 0."}

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "tfrecord")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(25, 25, 1)),
                    "label": tfds.features.ClassLabel(names=LFW_CLASS_NAMES),
                    "index": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-image.org/docs/stable/api/skimage.data.html#skimage.data.lfw_subset",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # The crops ship with scikit-image.
        from skimage import data

        images = data.lfw_subset()  # [200, 25, 25] float in 0..1; faces first.
        labels = np.array([1] * 100 + [0] * 100)
        splits = stratified_split(labels, LFW_TEST_FRACTION, seed=0)
        return {
            name: self._generate_examples(images, labels, indices)
            for name, indices in splits.items()
        }

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray):
        for i in indices:
            pixels = np.clip(np.round(images[i] * 255.0), 0, 255).astype(np.uint8)
            yield int(i), {"image": pixels[:, :, None], "label": int(labels[i]), "index": int(i)}
