"""`identities`: offline sets for one-shot learning, with disjoint identities per split.

Three tfds builder configs (``tfds.builder("identities/faces")``, after
``import convjax.data.identities``):

- ``faces`` (default): procedurally drawn faces. Each identity has its own fixed
  appearance (skin, hair colour and style, face shape, eye spacing, size and colour,
  eyebrows, nose, mouth, glasses, beard, moustache); every image of it varies in
  pose (rotation, scale, translation), expression (smile, eye opening), lighting
  (brightness, colour cast), background and pixel noise. 32x32x3, seeded;
  1000/50/100 identities with 8/10/10 images each in train/validation/test.
- ``faces_small``: the same with 12/6/8 identities of 6/4/4 images (tests, smoke runs).
- ``digits``: scikit-learn's real handwritten digits (32x32x1), each digit class an
  identity: classes 0-4 train, 5-6 validation, 7-9 test.

Splits ``train``, ``validation`` and ``test`` hold disjoint identities, so a model
trained on ``train`` is evaluated one-shot on people it never saw; ``validation``
is for choosing thresholds. Features: ``image`` uint8 [H, W, C], ``identity``
int64 (unique over all splits), ``index`` int64 (the image's number within its
identity). The registered example function maps them to the pipeline's
``{'image', 'label'}`` with ``label = identity``.

Sizes of ``faces`` are fields of :class:`IdentitiesConfig`; pass your own config
for another size: ``tfds.builder("identities", config=IdentitiesConfig(name=...,
...))``.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from convjax.data.examples import register_example_fn

SPLITS = ("train", "validation", "test")
DIGIT_SPLITS = {"train": (0, 1, 2, 3, 4), "validation": (5, 6), "test": (7, 8, 9)}


@dataclasses.dataclass(eq=False)
class IdentitiesConfig(tfds.core.BuilderConfig):
    """``source``: ``'faces'`` or ``'digits'``. For faces: identities and images per
    identity of each split, image size, and the seed everything is drawn from."""

    source: str = "faces"
    identities: tuple[int, int, int] = (1000, 50, 100)  # train, validation, test
    images_per_identity: tuple[int, int, int] = (8, 10, 10)
    image_size: int = 32
    seed: int = 0


# ------------------------------------------------------------------- face drawing
def _face_identities(num: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draws ``num`` identities' fixed appearance parameters, each [num, ...]."""
    skin_tones = np.array(
        [
            [0.98, 0.84, 0.72],
            [0.92, 0.72, 0.56],
            [0.78, 0.57, 0.42],
            [0.55, 0.38, 0.26],
            [0.36, 0.24, 0.16],
            [0.95, 0.78, 0.66],
        ]
    )
    tone = skin_tones[rng.integers(0, len(skin_tones), num)]
    u = lambda lo, hi, *shape: rng.uniform(lo, hi, (num, *shape))  # noqa: E731
    return {
        "skin": np.clip(tone + u(-0.06, 0.06, 3), 0, 1),
        "face_w": u(0.26, 0.36),
        "face_h": u(0.33, 0.43),
        "hair": _hair_colours(num, rng),
        "hair_top": u(-0.34, -0.18),  # the hair line (y); smaller: less hair
        "hair_wave": u(0.0, 0.06),  # amplitude and frequency of the hair line's waves
        "hair_freq": u(5.0, 14.0),
        "long_hair": rng.random(num) < 0.4,
        "eye_dx": u(0.09, 0.17),
        "eye_y": u(-0.12, -0.02),
        "eye_r": u(0.028, 0.055),
        "iris": u(0.0, 0.6, 3),
        "brow": u(0.0, 1.0) < 0.6,
        "brow_w": u(0.008, 0.02),
        "moustache": rng.random(num) < 0.15,
        "nose_len": u(0.05, 0.14),
        "nose_w": u(0.02, 0.05),
        "mouth_y": u(0.13, 0.24),
        "mouth_w": u(0.07, 0.17),
        "lips": np.clip(u(0.5, 0.9, 3) * np.array([1.0, 0.45, 0.45]), 0, 1),
        "smile": u(-0.8, 1.0),
        "glasses": rng.random(num) < 0.3,
        "beard": rng.random(num) < 0.2,
    }


def _hair_colours(num: int, rng: np.random.Generator) -> np.ndarray:
    """Mostly natural hair colours (with jitter), one in five dyed: [num, 3]."""
    natural = np.array(
        [
            [0.08, 0.06, 0.05],
            [0.25, 0.16, 0.10],
            [0.45, 0.30, 0.18],
            [0.85, 0.72, 0.45],
            [0.60, 0.25, 0.12],
            [0.70, 0.70, 0.70],
        ]
    )
    colour = natural[rng.integers(0, len(natural), num)] + rng.uniform(-0.07, 0.07, (num, 3))
    dyed = rng.random(num) < 0.2
    colour[dyed] = rng.uniform(0.0, 1.0, (int(dyed.sum()), 3))
    return np.clip(colour, 0.0, 1.0)


def _soft(signed: np.ndarray, px: float) -> np.ndarray:
    """Antialiased coverage of the region ``signed < 0`` (one pixel = ``px``)."""
    return np.clip(0.5 - signed / px, 0.0, 1.0)


def _paint(canvas: np.ndarray, cover: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """canvas [B, H, W, 3], cover [B, H, W], colour [B, 3] -> alpha-blended canvas."""
    cover = cover[..., None]
    return canvas * (1.0 - cover) + colour[:, None, None, :] * cover


def _paint_head(
    canvas: np.ndarray, x: np.ndarray, y: np.ndarray, p: dict[str, np.ndarray], fpx: np.ndarray
) -> np.ndarray:
    """Long hair, face, hair on top and beard onto ``canvas`` [B, H, W, 3]; ``x``, ``y``:
    face coordinates of every pixel [B, H, W]; ``fpx``: one pixel in face units [B, 1, 1]."""
    col = lambda a: a[:, None, None]  # noqa: E731  [B] -> [B, 1, 1]
    w, h = col(p["face_w"]), col(p["face_h"])
    face = np.sqrt((x / w) ** 2 + (y / h) ** 2) - 1.0
    # Long hair: a wider ellipse behind the face, down to the chin.
    back = np.sqrt((x / (w * 1.25)) ** 2 + ((y + 0.05) / (h * 1.05)) ** 2) - 1.0
    canvas = _paint(canvas, _soft(back * h, fpx) * col(p["long_hair"]), p["hair"])
    canvas = _paint(canvas, _soft(face * h, fpx), p["skin"])
    # Hair on top of the head: inside a slightly larger ellipse, above the hair line.
    cap = np.sqrt((x / (w * 1.08)) ** 2 + (y / (h * 1.08)) ** 2) - 1.0
    above = y - col(p["hair_top"]) + col(p["hair_wave"]) * np.cos(x * col(p["hair_freq"]))
    canvas = _paint(canvas, _soft(np.maximum(cap * h, above), fpx), p["hair"])
    # Beard: the lower face below the mouth line.
    jaw = np.maximum(face * h, col(p["mouth_y"]) - 0.03 - y)
    canvas = _paint(canvas, _soft(jaw, fpx) * col(p["beard"]) * 0.9, p["hair"])
    return canvas


def _paint_eyes(
    canvas: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    p: dict[str, np.ndarray],
    openness: np.ndarray,
    fpx: np.ndarray,
) -> np.ndarray:
    """Eyes, eyebrows and glasses onto ``canvas`` [B, H, W, 3]; ``openness`` [B]: how far
    each image's eyes are open (coordinates as in :func:`_paint_head`)."""
    b = len(canvas)
    col = lambda a: a[:, None, None]  # noqa: E731  [B] -> [B, 1, 1]
    # Eyes (whites, iris), opening varies per image; eyebrows; glasses.
    r = col(p["eye_r"])
    for side in (-1.0, 1.0):
        ex = x - side * col(p["eye_dx"])
        ey = y - col(p["eye_y"])
        white = np.sqrt((ex / (1.5 * r)) ** 2 + (ey / (r * col(openness))) ** 2) - 1.0
        canvas = _paint(canvas, _soft(white * r, fpx), np.full((b, 3), 0.97))
        iris = np.sqrt(ex**2 + ey**2) - 0.75 * r
        canvas = _paint(canvas, _soft(np.maximum(iris, white * r), fpx), p["iris"])
        brow = np.maximum(np.abs(ey + 1.9 * r) - col(p["brow_w"]), np.abs(ex) - 1.6 * r)
        canvas = _paint(canvas, _soft(brow, fpx) * col(p["brow"]), p["hair"] * 0.8)
        rim = np.abs(np.sqrt(ex**2 + ey**2) - 2.0 * r) - 0.012
        canvas = _paint(canvas, _soft(rim, fpx) * col(p["glasses"]), np.zeros((b, 3)))
    bridge = np.maximum(np.abs(y - col(p["eye_y"])) - 0.01, np.abs(x) - col(p["eye_dx"]) + 2 * r)
    canvas = _paint(canvas, _soft(bridge, fpx) * col(p["glasses"]), np.zeros((b, 3)))
    return canvas


def draw_faces(identity: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """Draws one image per row of ``identity`` (appearance [B, ...]) with random pose,
    expression, lighting, background and noise -> uint8 [B, size, size, 3]."""
    b = len(identity["face_w"])
    u = lambda lo, hi, *shape: rng.uniform(lo, hi, (b, *shape))  # noqa: E731
    col = lambda a: a[:, None, None]  # noqa: E731  [B] -> [B, 1, 1]
    px = 1.0 / size
    grid = (np.arange(size) + 0.5) / size - 0.5
    gy, gx = np.meshgrid(grid, grid, indexing="ij")  # image coordinates in [-0.5, 0.5]

    # Pose: face coordinates (x, y) of every pixel under rotation, scale, shift.
    angle = u(-0.25, 0.25)
    scale = u(0.9, 1.1)
    shift = u(-0.05, 0.05, 2)
    cx, cy = gx[None] - col(shift[:, 0]), gy[None] - col(shift[:, 1])
    cos, sin = col(np.cos(angle)), col(np.sin(angle))
    x = (cos * cx + sin * cy) / col(scale)
    y = (-sin * cx + cos * cy) / col(scale)
    fpx = px / scale[:, None, None]  # one pixel in face units

    # Background: a random colour with a random linear gradient.
    bg = u(0.1, 0.9, 3)
    slope = u(-0.3, 0.3, 2)
    ramp = slope[:, 0, None, None] * gx[None] + slope[:, 1, None, None] * gy[None]
    canvas = np.clip(bg[:, None, None, :] + ramp[..., None], 0, 1)

    p = {k: v for k, v in identity.items()}
    canvas = _paint_head(canvas, x, y, p, fpx)
    openness = np.where(rng.random(b) < 0.05, 0.35, u(0.75, 1.0))
    canvas = _paint_eyes(canvas, x, y, p, openness, fpx)

    # Nose: a darker triangle-ish wedge; mouth: a curved band (smile varies per image).
    ny = (y - col(p["eye_y"])) / col(p["nose_len"])
    nose = np.maximum(np.abs(x) - col(p["nose_w"]) * np.clip(ny, 0, 1), np.abs(ny - 0.5) - 0.5)
    canvas = _paint(canvas, _soft(nose * 0.5, fpx) * 0.6, p["skin"] * 0.6)
    smile = col(p["smile"] + u(-0.3, 0.3))
    mw = col(p["mouth_w"])
    curve = y - col(p["mouth_y"]) + smile * 0.06 * (1.0 - (x / mw) ** 2)
    mouth = np.maximum(np.abs(curve) - 0.018, np.abs(x) - mw)
    canvas = _paint(canvas, _soft(mouth, fpx), p["lips"])
    whiskers = np.maximum(np.abs(y - col(p["mouth_y"]) + 0.045) - 0.018, np.abs(x) - mw * 0.9)
    canvas = _paint(canvas, _soft(whiskers, fpx) * col(p["moustache"]), p["hair"])

    # Lighting and sensor: brightness, colour cast, noise.
    canvas = canvas * col(u(0.8, 1.15))[..., None] + u(-0.04, 0.04, 3)[:, None, None, :]
    canvas = canvas + rng.normal(0.0, 0.03, canvas.shape)
    return np.clip(np.round(canvas * 255.0), 0, 255).astype(np.uint8)


def face_split_plan(config: IdentitiesConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """For each split: (identity of every image [N], index within identity [N])."""
    plan, first = {}, 0
    for split, num, per in zip(SPLITS, config.identities, config.images_per_identity, strict=True):
        ids = np.repeat(np.arange(first, first + num), per)
        plan[split] = (ids, np.tile(np.arange(per), num))
        first += num
    return plan


def draw_face_split(config: IdentitiesConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All images of one split: (uint8 [N, S, S, 3], identity [N]); deterministic."""
    total = sum(config.identities)
    appearance = _face_identities(total, np.random.default_rng([config.seed, 0]))
    ids, _ = face_split_plan(config)[split]
    # Each split has its own pose/lighting stream, so splits are independent of
    # each other's sizes.
    rng = np.random.default_rng([config.seed, 1 + SPLITS.index(split)])
    chunks = [
        draw_faces({k: v[ids[i : i + 256]] for k, v in appearance.items()}, config.image_size, rng)
        for i in range(0, len(ids), 256)
    ]
    return np.concatenate(chunks), ids


# --------------------------------------------------------------------- the builder
class Identities(tfds.core.GeneratorBasedBuilder):
    """Disjoint-identity splits for one-shot learning (faces drawn, or real digits)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "faces (drawn, seeded) and digits (scikit-learn) configs."}
    BUILDER_CONFIGS = [
        IdentitiesConfig(name="faces", description="Drawn faces: 1000/50/100 identities."),
        IdentitiesConfig(
            name="faces_small",
            description="Drawn faces for tests and smoke runs: 12/6/8 identities.",
            identities=(12, 6, 8),
            images_per_identity=(6, 4, 4),
        ),
        IdentitiesConfig(
            name="digits",
            description="scikit-learn digits; classes 0-4 / 5-6 / 7-9.",
            source="digits",
        ),
    ]
    DEFAULT_CONFIG_NAME = "faces"

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "tfrecord")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        if config.source == "digits":
            shape, total = (32, 32, 1), 10
        else:
            shape, total = (config.image_size, config.image_size, 3), sum(config.identities)
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=shape),
                    "identity": tfds.features.ClassLabel(num_classes=total),
                    "index": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            supervised_keys=("image", "identity"),
            # Files keep the generation order (identity-major), so sequential eval
            # batches hold whole identities and in-batch retrieval metrics mean something.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Everything is drawn or ships with scikit-learn.
        config = self.builder_config
        if config.source not in ("faces", "digits"):
            raise ValueError(
                f"IdentitiesConfig.source must be 'faces' or 'digits'; got {config.source!r}"
            )
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str):
        if self.builder_config.source == "digits":
            yield from self._digit_examples(split)
            return
        images, ids = draw_face_split(self.builder_config, split)
        _, index = face_split_plan(self.builder_config)[split]
        for i in range(len(ids)):
            yield i, {"image": images[i], "identity": int(ids[i]), "index": int(index[i])}

    def _digit_examples(self, split: str):
        from sklearn.datasets import load_digits

        from convjax.data.sklearn_digits import upsample_digit

        digits = load_digits()
        rows = np.flatnonzero(np.isin(digits.target, DIGIT_SPLITS[split]))
        seen = dict.fromkeys(DIGIT_SPLITS[split], 0)
        for i in rows:
            label = int(digits.target[i])
            key = label * 10_000 + seen[label]  # keys sort identity-major
            example = {"image": upsample_digit(digits.images[i]), "identity": label}
            yield key, {**example, "index": seen[label]}
            seen[label] += 1


@register_example_fn("identities")
def identities_example(example: dict, config: ml_collections.ConfigDict) -> dict:
    """``{'image', 'identity', ...}`` -> ``{'image': uint8 [H, W, C], 'label': int32}``."""
    del config
    return {"image": example["image"], "label": tf.cast(example["identity"], tf.int32)}


LFW_CROP = 120  # the central face region of LFW's 250x250 images


@register_example_fn("lfw_identities")
def lfw_identities_example(example: dict, config: ml_collections.ConfigDict) -> dict:
    """tfds ``lfw`` for identity learning: the central 120x120 crop of the 250x250
    image, and the person's name hashed to an int32 ``label`` (collisions among
    LFW's 5,749 names are improbable at 2^31 buckets)."""
    del config
    image = example["image"]
    offset = (250 - LFW_CROP) // 2
    image = tf.image.crop_to_bounding_box(image, offset, offset, LFW_CROP, LFW_CROP)
    label = tf.strings.to_hash_bucket_fast(example["label"], 2**31 - 1)
    return {"image": image, "label": tf.cast(label, tf.int32)}
