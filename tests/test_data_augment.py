"""Augmentation: geometry against scipy/numpy, boxes and landmarks follow the image,
colour ops keep the range; every op jitted and vmapped over a batch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from sklearn.decomposition import PCA

from convjax.data import augment, colour, geometry

H, W = 20, 24


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


@functools.cache
def jitted_batch_augment(spec, landmark_flip_permutation=None):
    return jax.jit(
        augment.make_batch_augment(spec, landmark_flip_permutation=landmark_flip_permutation)
    )


def batch_augment(spec, batch, seed=0, landmark_flip_permutation=None):
    """Runs the batch augmenter jitted (it vmaps make_augment over the examples)."""
    fn = jitted_batch_augment(spec, landmark_flip_permutation)
    return fn(jax.random.key(seed), batch)


def blob_images(centres, sigma=1.3):
    """centres: [B, 2] pixel (y, x) -> [B, H, W, 3] Gaussian blobs and their landmarks."""
    yy, xx = np.mgrid[:H, :W]
    images = np.exp(
        -((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) / (2 * sigma**2)
    )
    landmarks = (centres[:, None, :] + 0.5) / np.array([H, W])  # [B, 1, 2] normalised
    return np.repeat(images[..., None], 3, -1).astype(np.float32), landmarks.astype(np.float32)


def centroids(images):
    yy, xx = np.mgrid[:H, :W]
    mass = images[..., 0]
    total = mass.sum(axis=(1, 2))
    return np.stack([(mass * yy).sum((1, 2)) / total, (mass * xx).sum((1, 2)) / total], -1)


def test_warp_matches_scipy_affine_transform():
    image = np.random.default_rng(0).random((H, W, 3)).astype(np.float32)
    forward = (
        geometry.shear_matrix(0.2, H, W)
        @ geometry.rotation_matrix(0.5, H, W)
        @ geometry.translation_matrix(1.5, -2.2)
    )
    out = jax.jit(geometry.warp_image)(jnp.asarray(image), forward)
    pull = np.linalg.inv(np.asarray(forward, np.float64))
    reference = np.stack(
        [
            ndimage.affine_transform(
                image[..., c].astype(np.float64),
                pull[:2, :2],
                offset=pull[:2, 2],
                order=1,
                mode="grid-constant",
            )
            for c in range(3)
        ],
        -1,
    )
    np.testing.assert_allclose(out, reference, atol=1e-5)


def test_rotation_by_90_degrees_is_numpy_rot90():
    image = np.random.default_rng(1).random((16, 16, 2)).astype(np.float32)
    out = jax.jit(geometry.warp_image)(
        jnp.asarray(image), geometry.rotation_matrix(np.pi / 2, 16, 16)
    )
    np.testing.assert_allclose(out, np.rot90(image), atol=1e-5)  # Counter-clockwise.


def test_mirror_flips_image_boxes_and_permutes_landmarks_and_twice_is_identity():
    rng = np.random.default_rng(2)
    images = rng.random((4, H, W, 3)).astype(np.float32)
    boxes = np.array([[0.1, 0.2, 0.5, 0.3]] * 4, np.float32)[:, None]  # [B, 1, 4]
    landmarks = rng.random((4, 3, 2)).astype(np.float32)  # left eye, right eye, nose
    batch = {"image": images, "boxes": boxes, "landmarks": landmarks, "label": np.arange(4)}
    permutation = [1, 0, 2]
    once = batch_augment("mirror(p=1)", batch, landmark_flip_permutation=(1, 0, 2))
    np.testing.assert_allclose(once["image"], images[:, :, ::-1], atol=1e-6)
    np.testing.assert_allclose(once["boxes"][:, 0], [[0.1, 0.7, 0.5, 0.8]] * 4, atol=1e-6)
    expected = landmarks[:, permutation] * [1, -1] + [0, 1]
    np.testing.assert_allclose(once["landmarks"], expected, atol=1e-6)
    np.testing.assert_array_equal(once["label"], batch["label"])
    twice = batch_augment("mirror(p=1), mirror(p=1)", batch, landmark_flip_permutation=(1, 0, 2))
    np.testing.assert_allclose(twice["image"], images, atol=1e-6)
    np.testing.assert_allclose(twice["boxes"], boxes, atol=1e-6)
    np.testing.assert_allclose(twice["landmarks"], landmarks, atol=1e-6)
    # With p=0.5 some examples are mirrored and some not, each one consistently.
    half = batch_augment("mirror", {"image": np.tile(images[:1], (16, 1, 1, 1))}, seed=3)
    flipped = [np.allclose(h, images[0, :, ::-1], atol=1e-6) for h in half["image"]]
    kept = [np.allclose(h, images[0], atol=1e-6) for h in half["image"]]
    assert all(f != k for f, k in zip(flipped, kept, strict=True)) and 0 < sum(flipped) < 16


@pytest.mark.parametrize(
    "spec",
    [
        "rotate(degrees=40)",
        "shear(degrees=25)",
        "zoom(0.7, 1.3)",
        "random_crop(pad=3)",
        "random_resized_crop(scale=(0.3, 1.0))",
        "mirror, rotate(20), shear(15), zoom(0.8, 1.2), random_crop(2)",
    ],
)
def test_bright_spot_moves_where_the_landmark_and_box_say(spec):
    rng = np.random.default_rng(4)
    centres = np.stack([rng.uniform(6, H - 7, 16), rng.uniform(6, W - 7, 16)], -1)
    images, landmarks = blob_images(centres)
    half = 3.0  # A box of +-3 pixels around each blob centre.
    boxes = np.concatenate([(centres - half + 0.5) / [H, W], (centres + half + 0.5) / [H, W]], -1)[
        :, None
    ].astype(np.float32)
    out = batch_augment(spec, {"image": images, "landmarks": landmarks, "boxes": boxes}, seed=5)
    predicted = np.asarray(out["landmarks"][:, 0]) * [H, W] - 0.5
    inside = np.all((predicted > 5) & (predicted < np.array([H, W]) - 6), axis=1)
    assert inside.sum() >= 8  # Most blobs stay well inside the image.
    measured = centroids(np.asarray(out["image"]))
    np.testing.assert_allclose(measured[inside], predicted[inside], atol=0.35)
    # The transformed box still contains the transformed centre.
    ymin, xmin, ymax, xmax = np.moveaxis(np.asarray(out["boxes"][:, 0]), -1, 0)
    y, x = (predicted[:, 0] + 0.5) / H, (predicted[:, 1] + 0.5) / W
    assert np.all(((ymin <= y) & (y <= ymax) & (xmin <= x) & (x <= xmax))[inside])
    assert not np.allclose(out["image"], images)  # Something moved.


def test_rotated_box_bounds_the_rotated_rectangle():
    image = np.zeros((1, H, W, 1), np.float32)
    image[0, 6:12, 8:18] = 1.0  # pixels rows 6..11, cols 8..17
    box = np.array([[[6 / H, 8 / W, 12 / H, 18 / W]]], np.float32)
    forward = geometry.rotation_matrix(0.4, H, W)
    out = jax.jit(geometry.warp_image)(jnp.asarray(image[0]), forward)
    ymin, xmin, ymax, xmax = np.asarray(
        jax.jit(geometry.transform_boxes, static_argnums=(2, 3))(box, forward, H, W)
    )[0, 0]
    rows, cols = np.nonzero(np.asarray(out[..., 0]) > 0.5)
    assert rows.min() >= ymin * H - 0.5 and rows.max() <= ymax * H - 0.5
    assert cols.min() >= xmin * W - 0.5 and cols.max() <= xmax * W - 0.5
    # ... and tightly: the rotated rectangle reaches within a pixel of each side.
    assert rows.min() - (ymin * H - 0.5) < 1.5 and (ymax * H - 0.5) - rows.max() < 1.5


def test_random_crop_is_an_integer_shift_with_zero_fill():
    image = np.random.default_rng(6).random((H, W, 3)).astype(np.float32) + 0.1
    out = np.asarray(batch_augment("random_crop(pad=4)", {"image": image[None]}, seed=7)["image"])[
        0
    ]
    matches = []
    for dy in range(-4, 5):
        for dx in range(-4, 5):
            shifted = np.zeros_like(image)
            src = image[max(0, -dy) : H - max(0, dy), max(0, -dx) : W - max(0, dx)]
            shifted[
                max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]
            ] = src
            matches.append(np.allclose(out, shifted, atol=1e-6))
    assert sum(matches) == 1


def test_random_resized_crop_stays_inside_the_image():
    ones = np.ones((8, H, W, 3), np.float32)
    out = batch_augment("random_resized_crop(scale=(0.1, 0.5))", {"image": ones}, seed=8)
    np.testing.assert_allclose(out["image"], 1.0, atol=1e-5)  # No zero fill was pulled in.


@pytest.mark.parametrize(
    "spec",
    [
        "colour_shift(0.2)",
        "pca_lighting(std=0.5)",
        "brightness(0.3)",
        "contrast(0.5, 1.5)",
        "saturation(0.2, 1.8)",
        "hue(0.2)",
        "mirror, rotate(10), colour_shift(0.1), pca_lighting, brightness, contrast, saturation",
    ],
)
def test_colour_ops_keep_the_value_range(spec):
    rng = np.random.default_rng(9)
    images = rng.random((8, H, W, 3)).astype(np.float32)
    images[:, :2] = 1.0
    images[:, -2:] = 0.0
    out = np.asarray(batch_augment(spec, {"image": images}, seed=10)["image"])
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, images, atol=1e-3)
    again = np.asarray(batch_augment(spec, {"image": images}, seed=10)["image"])
    np.testing.assert_array_equal(out, again)  # Same key, same result.


def test_colour_shift_and_pca_lighting_add_one_offset_per_channel():
    images = np.full((6, H, W, 3), 0.5, np.float32) + np.random.default_rng(11).uniform(
        -0.05, 0.05, (6, H, W, 3)
    ).astype(np.float32)
    shifted = np.asarray(batch_augment("colour_shift(0.1)", {"image": images})["image"])
    offsets = (shifted - images).reshape(6, -1, 3)
    np.testing.assert_allclose(offsets, np.broadcast_to(offsets[:, :1], offsets.shape), atol=1e-6)
    assert np.all(np.abs(offsets) <= 0.1 + 1e-6)
    lit = np.asarray(batch_augment("pca_lighting(std=0.1)", {"image": images})["image"])
    offsets = (lit - images).reshape(6, -1, 3)[:, 0]  # [B, 3]
    # The offset is V @ (alpha * eigenvalues): recover alpha, it is a small normal draw.
    alpha = offsets @ colour.IMAGENET_EIGENVECTORS / colour.IMAGENET_EIGENVALUES
    np.testing.assert_allclose(
        alpha @ np.diag(colour.IMAGENET_EIGENVALUES) @ colour.IMAGENET_EIGENVECTORS.T,
        offsets,
        atol=1e-5,
    )
    assert np.all(np.abs(alpha) < 0.5)


def test_rgb_pca_matches_sklearn_and_drives_pca_lighting_from_data():
    rng = np.random.default_rng(12)
    mixing = np.array([[0.3, 0.1, 0.0], [0.1, 0.2, 0.05], [0.0, 0.05, 0.1]])
    images = np.clip(0.5 + rng.normal(size=(50, 8, 8, 3)) @ mixing, 0, 1)
    values, vectors = colour.rgb_pca(images)
    reference = PCA(n_components=3).fit(images.reshape(-1, 3))
    np.testing.assert_allclose(values, reference.explained_variance_, rtol=1e-4)
    np.testing.assert_allclose(np.abs(vectors.T), np.abs(reference.components_), atol=1e-4)
    lighting = augment.make_batch_augment(
        "pca_lighting(0.1, eigen='data')", pca_basis=(values, vectors)
    )
    out = jax.jit(lighting)(jax.random.key(0), {"image": images.astype(np.float32)})
    assert np.asarray(out["image"]).min() >= 0.0


def test_bad_specs_fail_clearly():
    with pytest.raises(ValueError, match="valid: .*mirror"):
        augment.parse_augment("mirror, spin(3)")
    with pytest.raises(ValueError, match="takes arguments \\['degrees'\\]"):
        augment.parse_augment("rotate(angle=3)")
    with pytest.raises(ValueError, match="Cannot read"):
        augment.parse_augment("rotate(x+1)")
    with pytest.raises(ValueError, match="pca_basis"):
        augment.make_augment("pca_lighting(eigen='data')")
    with pytest.raises(ValueError, match="RGB images"):
        batch_augment("saturation", {"image": np.zeros((2, H, W, 1), np.float32)})
    assert augment.parse_augment(["mirror", {"name": "rotate", "degrees": 5}]) == [
        ("mirror", {}),
        ("rotate", {"degrees": 5}),
    ]
