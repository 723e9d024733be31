"""`shapes`: seeded detection scenes of coloured circles, squares and triangles.

Every image has a noisy colour-gradient background with clutter (thin line segments
and dots), and 0..``max_objects`` shapes of varying size and colour, placed so that
they may overlap (a later shape occludes an earlier one; its box is still the full
shape). Each object has its box, its class and 5 landmarks::

    centre, top-left, top-right, bottom-right, bottom-left

(the square's corners; the triangle's apex twice, then its base corners; the
circle's points at 135, 45, -45 and 225 degrees), so a left-right mirror re-indexes
them with :data:`LANDMARK_FLIP_PERMUTATION` = ``(0, 2, 1, 4, 3)``.

Builder configs (``tfds.builder("shapes/<config>")`` after ``import convjax.data``):

- ``scenes`` (default): 64x64, 1..4 objects, 6,000 train / 500 test images;
- ``single``: 64x64, 0 or 1 object (classification with localization, landmarks),
  4,000 train / 500 test;
- ``scenes_small`` / ``single_small``: the same with 96 train / 32 test images (tests).

Features: ``image`` uint8 [S, S, 3]; ``objects``: a sequence of ``bbox``
(tfds ``BBoxFeature``: normalised ``(ymin, xmin, ymax, xmax)``), ``label``
(circle / square / triangle) and ``landmarks`` float32 [5, 2] normalised ``(y, x)``.
Splits ``train`` and ``test`` are drawn from different seeds. Other sizes:
``tfds.builder("shapes", config=ShapesConfig(name=..., ...))``.

The registered example function pads objects to ``dataset.max_objects`` (default
:data:`MAX_OBJECTS`): ``boxes`` float32 [N, 4] (yxyx, normalised), ``classes`` int32
[N], ``landmarks`` float32 [N, 5, 2], ``box_mask`` float32 [N] (1 real, 0 padding),
``num_objects`` int32 and ``label`` int32 (the first object's class, 0 if none).
``example_fn='detection_objects'`` gives other tfds detection sets (voc, coco) the same
layout (without landmarks, with ``difficult``).
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from convjax.data.examples import register_example_fn

CLASS_NAMES = ("circle", "square", "triangle")
NUM_LANDMARKS = 5
LANDMARK_NAMES = ("centre", "top_left", "top_right", "bottom_right", "bottom_left")
LANDMARK_FLIP_PERMUTATION = (0, 2, 1, 4, 3)
MAX_OBJECTS = 6
_SUPERSAMPLE = 4


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
    """Scene parameters; sizes are in pixels of the ``image_size`` square."""

    image_size: int = 64
    num_train: int = 6000
    num_test: int = 500
    min_objects: int = 1
    max_objects: int = 4
    min_size: int = 10
    max_size: int = 30
    # A placement is redrawn when it covers more than this fraction of the smaller box of
    # an overlapping pair, so objects overlap but none is hidden.
    max_overlap: float = 0.4
    clutter: int = 6  # line segments and dots per image
    seed: int = 0


BUILDER_CONFIGS = [
    ShapesConfig(name="scenes", description="64x64, 1..4 objects, 6000/500."),
    ShapesConfig(
        name="single",
        description="64x64, 0 or 1 object, 4000/500.",
        num_train=4000,
        min_objects=0,
        max_objects=1,
        min_size=14,
        max_size=40,
    ),
    ShapesConfig(name="scenes_small", description="scenes, 96/32.", num_train=96, num_test=32),
    ShapesConfig(
        name="single_small",
        description="single, 96/32.",
        num_train=96,
        num_test=32,
        min_objects=0,
        max_objects=1,
        min_size=14,
        max_size=40,
    ),
]


# ---------------------------------------------------------------------------- drawing
def _random_colour(rng: np.random.Generator, value: tuple[float, float]) -> np.ndarray:
    """A saturated RGB colour in 0..1 with HSV value in ``value``."""
    hue = rng.random()
    sat = rng.uniform(0.6, 1.0)
    val = rng.uniform(*value)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    return val - val * sat * np.clip(np.minimum(k, 4 - k), 0, 1)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dim two-colour linear gradient in a random direction. -> [S, S, 3] in 0..1."""
    a, b = _random_colour(rng, (0.1, 0.45)), _random_colour(rng, (0.1, 0.45))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)
    return a * (1 - t[..., None]) + b * t[..., None]


def _coverage(inside, size: int) -> np.ndarray:
    """Anti-aliased coverage in 0..1 of a region given as ``inside(x, y) -> bool``."""
    step = 1.0 / _SUPERSAMPLE
    coords = (np.arange(size * _SUPERSAMPLE) + 0.5) * step
    xx, yy = np.meshgrid(coords, coords)
    mask = inside(xx, yy).astype(np.float32)
    return mask.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(1, 3))


def _add_clutter(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    size = image.shape[0]
    for _ in range(count):
        colour = _random_colour(rng, (0.3, 0.8))
        if rng.random() < 0.5:  # a thin line segment
            p, q = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
            d = q - p
            length2 = max(float(d @ d), 1e-6)

            def inside(x, y, p=p, d=d, length2=length2):
                t = np.clip(((x - p[0]) * d[0] + (y - p[1]) * d[1]) / length2, 0, 1)
                return (x - p[0] - t * d[0]) ** 2 + (y - p[1] - t * d[1]) ** 2 <= 0.35**2
        else:  # a small dot
            c, r = rng.uniform(0, size, 2), rng.uniform(0.8, 1.8)

            def inside(x, y, c=c, r=r):
                return (x - c[0]) ** 2 + (y - c[1]) ** 2 <= r**2

        cov = _coverage(inside, size)[..., None] * rng.uniform(0.4, 0.9)
        image *= 1 - cov
        image += cov * colour


def _shape_geometry(label: int, x0: float, y0: float, s: float):
    """Region test and landmarks [(x, y)] x 5 of a shape in the square at (x0, y0), side s."""
    cx, cy = x0 + s / 2, y0 + s / 2
    if label == 0:  # circle
        r = s / 2
        o = r / math.sqrt(2)
        points = [(cx, cy), (cx - o, cy - o), (cx + o, cy - o), (cx + o, cy + o), (cx - o, cy + o)]
        return (lambda x, y: (x - cx) ** 2 + (y - cy) ** 2 <= r * r), points
    if label == 1:  # square
        x1, y1 = x0 + s, y0 + s
        points = [(cx, cy), (x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        return (lambda x, y: (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)), points
    # triangle: apex at the top centre, base along the bottom
    apex, right, left = (cx, y0), (x0 + s, y0 + s), (x0, y0 + s)

    def inside(x, y):
        def side(a, b):
            return (b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0])

        d1, d2, d3 = side(apex, right), side(right, left), side(left, apex)
        return ((d1 >= 0) & (d2 >= 0) & (d3 >= 0)) | ((d1 <= 0) & (d2 <= 0) & (d3 <= 0))

    centroid = (cx, y0 + 2 * s / 3)
    return inside, [centroid, apex, apex, right, left]


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box's area (xyxy boxes)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def render_scene(rng: np.random.Generator, config: ShapesConfig) -> dict[str, np.ndarray]:
    """Draws one scene.

    Returns ``image`` uint8 [S, S, 3], ``bbox`` float32 [n, 4] normalised yxyx,
    ``label`` int64 [n], ``landmarks`` float32 [n, 5, 2] normalised (y, x).
    """
    size = config.image_size
    image = _background(rng, size)
    _add_clutter(rng, image, config.clutter)
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    placed: list[np.ndarray] = []
    labels, landmarks = [], []
    for _ in range(count):
        for _attempt in range(30):
            s = rng.uniform(config.min_size, config.max_size)
            x0, y0 = rng.uniform(0, size - s, 2)
            box = np.array([x0, y0, x0 + s, y0 + s])
            if all(_overlap(box, other) <= config.max_overlap for other in placed):
                break
        else:
            continue
        label = int(rng.integers(len(CLASS_NAMES)))
        inside, points = _shape_geometry(label, x0, y0, s)
        cov = _coverage(inside, size)[..., None]
        image *= 1 - cov
        image += cov * _random_colour(rng, (0.65, 1.0))
        placed.append(box)
        labels.append(label)
        landmarks.append([(y / size, x / size) for x, y in points])
    image = image + rng.normal(0, 0.025, image.shape)
    boxes = np.array([[b[1], b[0], b[3], b[2]] for b in placed]).reshape(-1, 4) / size
    return {
        "image": np.clip(np.round(image * 255), 0, 255).astype(np.uint8),
        "bbox": np.clip(boxes, 0, 1).astype(np.float32),
        "label": np.array(labels, np.int64),
        "landmarks": np.array(landmarks, np.float32).reshape(-1, NUM_LANDMARKS, 2),
    }


class Shapes(tfds.core.GeneratorBasedBuilder):
    """Procedural detection scenes: circles, squares, triangles, boxes and landmarks."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = BUILDER_CONFIGS

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "tfrecord")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 3)),
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                            "landmarks": tfds.features.Tensor(
                                shape=(NUM_LANDMARKS, 2), dtype=np.float32
                            ),
                        }
                    ),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Everything is drawn here.
        config = self.builder_config
        return {
            "train": self._generate_examples(config.num_train, split_seed=0),
            "test": self._generate_examples(config.num_test, split_seed=1),
        }

    def _generate_examples(self, count: int, split_seed: int):
        config = self.builder_config
        for index in range(count):
            rng = np.random.default_rng([config.seed, split_seed, index])
            scene = render_scene(rng, config)
            objects = {k: scene[k] for k in ("bbox", "label", "landmarks")}
            yield index, {"image": scene["image"], "objects": objects}


# --------------------------------------------------------------------- example functions
def _pad(x: tf.Tensor, max_objects: int, dtype) -> tf.Tensor:
    """[n, ...] -> [max_objects, ...] (cut or zero-padded)."""
    x = tf.cast(x[:max_objects], dtype)
    padding = [[0, max_objects - tf.shape(x)[0]]] + [[0, 0]] * (x.shape.rank - 1)
    return tf.ensure_shape(tf.pad(x, padding), [max_objects, *x.shape[1:]])


def padded_objects(objects: dict, max_objects: int) -> dict:
    """A tfds ``objects`` sequence (``bbox``, ``label``) -> fixed-shape arrays: ``boxes``
    [N, 4] (tfds order, normalised), ``classes`` [N], ``box_mask`` [N], ``num_objects``,
    ``label`` (the first object's class)."""
    count = tf.minimum(tf.shape(objects["label"])[0], max_objects)
    classes = _pad(objects["label"], max_objects, tf.int32)
    return {
        "boxes": _pad(objects["bbox"], max_objects, tf.float32),
        "classes": classes,
        "box_mask": tf.cast(tf.range(max_objects) < count, tf.float32),
        "num_objects": tf.cast(count, tf.int32),
        "label": classes[0],
    }


@register_example_fn("shapes")
def shapes_example(example: dict, config: ml_collections.ConfigDict) -> dict:
    """Pads a scene's objects to ``config.max_objects`` (fixed shapes for batching)."""
    max_objects = int(config.get("max_objects", None) or MAX_OBJECTS)
    arrays = padded_objects(example["objects"], max_objects)
    arrays["landmarks"] = _pad(example["objects"]["landmarks"], max_objects, tf.float32)
    return {"image": example["image"], **arrays}


@register_example_fn("detection_objects")
def detection_objects_example(example: dict, config: ml_collections.ConfigDict) -> dict:
    """Any tfds detection set with ``objects/bbox`` and ``objects/label`` (voc, coco, ...):
    the same padded layout as ``shapes``, plus ``difficult`` [N] from VOC's
    ``is_difficult`` or COCO's ``is_crowd`` (such objects are ignored by the mAP)."""
    max_objects = int(config.get("max_objects", None) or MAX_OBJECTS)
    objects = example["objects"]
    arrays = padded_objects(objects, max_objects)
    flag = next((objects[k] for k in ("is_difficult", "is_crowd") if k in objects), None)
    if flag is None:
        flag = tf.zeros_like(objects["label"])
    arrays["difficult"] = _pad(flag, max_objects, tf.float32)
    return {"image": example["image"], **arrays}
