"""scikit-image's bundled images and lfw_subset as tfds datasets, and the pipeline on them."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from skimage import data as skdata

from convjax import data
from convjax.data.skimage_sets import (
    SKIMAGE_IMAGE_NAMES,
    load_skimage_image,
    skimage_image_rgb,
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.getbasetemp() / "tfds")  # Shared by the data test modules.
    for name in ("skimage_images", "lfw_subset"):
        tfds.builder(name, data_dir=data_dir).download_and_prepare()
    return data_dir


def test_skimage_images_are_the_bundled_images(data_dir):
    builder = tfds.builder("skimage_images", data_dir=data_dir)
    examples = list(tfds.as_numpy(builder.as_dataset(split="train")))
    assert sorted(e["name"].decode() for e in examples) == sorted(SKIMAGE_IMAGE_NAMES)
    for example in examples:
        name = example["name"].decode()
        original = getattr(skdata, name)()
        assert example["grayscale"] == (original.ndim == 2)
        expected = np.repeat(original[..., None], 3, -1) if original.ndim == 2 else original
        np.testing.assert_array_equal(example["image"], expected)  # PNG is lossless.
        assert builder.info.features["label"].int2str(example["label"]) == name
    np.testing.assert_array_equal(load_skimage_image("coffee", data_dir), skdata.coffee())
    with pytest.raises(ValueError, match="astronaut"):
        load_skimage_image("no_such_image", data_dir)


def test_lfw_subset_faces_and_non_faces(data_dir):
    builder = tfds.builder("lfw_subset", data_dir=data_dir)
    assert builder.info.features["label"].names == ["non_face", "face"]
    crops = skdata.lfw_subset()  # [200, 25, 25] in 0..1, the 100 faces first.
    seen = []
    for split, size in (("train", 150), ("test", 50)):
        arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        assert arrays["image"].shape == (size, 25, 25, 1) and arrays["image"].dtype == np.uint8
        np.testing.assert_array_equal(arrays["label"], (arrays["index"] < 100).astype(int))
        assert np.sum(arrays["label"]) == size // 2  # Stratified: half faces in each split.
        expected = crops[arrays["index"]] * 255.0
        assert np.max(np.abs(arrays["image"][..., 0] - expected)) <= 0.5 + 1e-9
        seen.extend(arrays["index"])
    np.testing.assert_array_equal(np.sort(seen), np.arange(200))


def test_pipeline_serves_variable_size_images_resized(data_dir):
    config = data.default_dataset_config()
    config.update(name="skimage_images", data_dir=data_dir, train_split="train", eval_split="train")
    with pytest.raises(ValueError, match="image_size"):
        data.dataset_metadata(config)
    config.image_size = (48, 64)
    config.channels = 1
    meta = data.dataset_metadata(config)
    assert meta.image_shape == (48, 64, 1) and meta.num_classes == len(SKIMAGE_IMAGE_NAMES)
    batches = list(data.create_eval_iterator(config, global_batch_size=8))
    assert len(batches) == 3 and sum(b["mask"].sum() for b in batches) == 17
    assert batches[0]["image"].shape == (8, 48, 64, 1)
    # Compare one resized image with an independent resize (PIL area-like box filter).
    from PIL import Image

    first = batches[0]
    name = SKIMAGE_IMAGE_NAMES[int(first["label"][0])]
    original = np.asarray(Image.fromarray(load_skimage_image(name, data_dir)).convert("L"))
    reference = np.asarray(
        Image.fromarray(original).resize((64, 48), Image.Resampling.BILINEAR), np.float64
    )
    assert np.mean(np.abs(first["image"][0, ..., 0] * 255 - reference)) < 6.0


def test_center_crop_keeps_the_aspect_ratio(data_dir):
    config = data.default_dataset_config()
    config.update(
        name="skimage_images",
        data_dir=data_dir,
        eval_split="train",
        image_size=(48, 48),
        resize_mode="center_crop",
    )
    from PIL import Image

    for batch in data.create_eval_iterator(config, global_batch_size=17):
        for image, label in zip(batch["image"], batch["label"], strict=True):
            original = skimage_image_rgb(SKIMAGE_IMAGE_NAMES[int(label)])
            h, w = original.shape[:2]
            scale = 48 / min(h, w)  # Independent: PIL resize of the short side, centre crop.
            size = (max(48, round(w * scale)), max(48, round(h * scale)))
            resized = np.asarray(
                Image.fromarray(original).resize(size, Image.Resampling.BILINEAR), np.float64
            )
            top, left = (size[1] - 48) // 2, (size[0] - 48) // 2
            reference = resized[top : top + 48, left : left + 48]
            assert np.mean(np.abs(image * 255 - reference)) < 8.0, SKIMAGE_IMAGE_NAMES[int(label)]
    with pytest.raises(ValueError, match="resize_mode must be one of"):
        data.dataset_metadata({**config.to_dict(), "resize_mode": "pad"})
