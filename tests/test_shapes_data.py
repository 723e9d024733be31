"""The `shapes` tfds builder: boxes and landmarks agree with the drawn pixels; fixed shapes
through the pipeline; seeded."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from convjax.data import pipeline
from convjax.data.config import default_dataset_config
from convjax.data.shapes import MAX_OBJECTS, ShapesConfig, render_scene


def bright_mask(image: np.ndarray) -> np.ndarray:
    """Objects have HSV value >= 0.65, the background <= 0.45 (plus a little noise)."""
    return image.max(-1) / 255.0 > 0.55


@pytest.mark.parametrize("seed", range(6))
def test_box_and_landmarks_agree_with_the_drawn_pixels(seed):
    config = ShapesConfig(name="t", min_objects=1, max_objects=1, clutter=0, min_size=14)
    scene = render_scene(np.random.default_rng(seed), config)
    size = config.image_size
    ys, xs = np.nonzero(bright_mask(scene["image"]))
    ymin, xmin, ymax, xmax = scene["bbox"][0] * size
    # The box is the tight box of the shape's pixels (anti-aliased edges: within a pixel).
    assert abs(ys.min() - ymin) <= 1.0 and abs(xs.min() - xmin) <= 1.0
    assert abs(ys.max() + 1 - ymax) <= 1.0 and abs(xs.max() + 1 - xmax) <= 1.0
    landmarks = scene["landmarks"][0] * size  # (y, x)
    cy, cx = landmarks[0]
    assert bright_mask(scene["image"])[int(cy), int(cx)]  # the centre is on the shape
    if scene["label"][0] == 1:  # a square: corners are the box corners
        np.testing.assert_allclose(
            landmarks[1:], [[ymin, xmin], [ymin, xmax], [ymax, xmax], [ymax, xmin]], atol=1e-3
        )


def test_scenes_are_seeded_and_varied():
    config = ShapesConfig(name="t")
    a = render_scene(np.random.default_rng([0, 0, 5]), config)
    b = render_scene(np.random.default_rng([0, 0, 5]), config)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["bbox"], b["bbox"])
    scenes = [render_scene(np.random.default_rng([0, 0, i]), config) for i in range(40)]
    counts = [len(s["label"]) for s in scenes]
    assert min(counts) >= 1 and max(counts) == 4
    assert set(np.concatenate([s["label"] for s in scenes])) == {0, 1, 2}
    areas = np.concatenate([np.prod(s["bbox"][:, 2:] - s["bbox"][:, :2], 1) for s in scenes])
    assert areas.max() > 3 * areas.min()  # varying sizes


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("tfds"))
    tfds.builder("shapes/scenes_small", data_dir=directory).download_and_prepare()
    return directory


def test_builder_splits_and_features(data_dir):
    builder = tfds.builder("shapes/scenes_small", data_dir=data_dir)
    assert builder.info.splits["train"].num_examples == 96
    assert builder.info.splits["test"].num_examples == 32
    example = next(iter(tfds.as_numpy(builder.as_dataset(split="test").take(1))))
    assert example["image"].shape == (64, 64, 3)
    assert example["objects"]["landmarks"].shape[1:] == (5, 2)
    train = next(iter(tfds.as_numpy(builder.as_dataset(split="train").take(1))))
    assert not np.array_equal(train["image"], example["image"])  # splits use other seeds


def test_pipeline_pads_objects_to_fixed_shapes(data_dir):
    dataset = default_dataset_config()
    dataset.name = "shapes/scenes_small"
    dataset.data_dir = data_dir
    batch = next(pipeline.create_train_iterator(dataset, global_batch_size=8, seed=0))
    assert batch["image"].shape == (8, 64, 64, 3)
    assert batch["boxes"].shape == (8, MAX_OBJECTS, 4)
    assert batch["landmarks"].shape == (8, MAX_OBJECTS, 5, 2)
    np.testing.assert_array_equal(batch["box_mask"].sum(1), batch["num_objects"])
    assert np.all(batch["boxes"][batch["box_mask"] == 0] == 0)
    real = batch["boxes"][batch["box_mask"] > 0]
    assert np.all(real[:, 2:] > real[:, :2])  # ymax > ymin, xmax > xmin
    np.testing.assert_array_equal(batch["label"], batch["classes"][:, 0])
    evals = list(pipeline.create_eval_iterator(dataset, global_batch_size=10))
    assert sum(float(b["mask"].sum()) for b in evals) == 32


def test_detection_objects_example_pads_voc_and_coco_style_objects():
    import ml_collections
    import tensorflow as tf

    from convjax.data.shapes import detection_objects_example

    config = ml_collections.ConfigDict({"max_objects": 4})
    example = {
        "image": tf.zeros((10, 12, 3), tf.uint8),
        "objects": {
            "bbox": tf.constant([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]], tf.float32),
            "label": tf.constant([7, 3], tf.int64),
            "is_crowd": tf.constant([False, True]),
        },
    }
    out = {k: v.numpy() for k, v in detection_objects_example(example, config).items()}
    assert out["boxes"].shape == (4, 4) and out["num_objects"] == 2
    np.testing.assert_array_equal(out["classes"], [7, 3, 0, 0])
    np.testing.assert_array_equal(out["box_mask"], [1, 1, 0, 0])
    np.testing.assert_array_equal(out["difficult"], [0, 1, 0, 0])
    example["objects"] = {k: v for k, v in example["objects"].items() if k != "is_crowd"}
    out = detection_objects_example(example, config)
    np.testing.assert_array_equal(out["difficult"].numpy(), [0, 0, 0, 0])
