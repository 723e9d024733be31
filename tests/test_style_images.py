"""Colour preservation (YUV) against scikit-image; image conversion, file I/O and plots."""

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2yuv, yuv2rgb

from convjax.ops.images import to_uint8
from convjax.runs import images
from convjax.style import color


def test_yuv_conversions_match_scikit_image():
    rgb = images.load_image("skimage:chelsea", 48)
    np.testing.assert_allclose(color.rgb_to_yuv(jnp.asarray(rgb)), rgb2yuv(rgb), atol=1e-5)
    yuv = rgb2yuv(rgb)
    np.testing.assert_allclose(color.yuv_to_rgb(jnp.asarray(yuv)), yuv2rgb(yuv), atol=1e-5)
    np.testing.assert_allclose(color.luminance(jnp.asarray(rgb))[..., 0], yuv[..., 0], atol=1e-5)


def test_match_luminance_takes_the_content_mean_and_std():
    rng = np.random.default_rng(1)
    style_y = rng.uniform(0.0, 0.3, size=(1, 9, 7, 1)).astype(np.float32)
    content_y = rng.uniform(0.4, 1.0, size=(1, 6, 5, 1)).astype(np.float32)
    out = np.asarray(color.match_luminance(jnp.asarray(style_y), jnp.asarray(content_y)))
    assert out.shape == style_y.shape
    np.testing.assert_allclose(out.mean(), content_y.mean(), atol=1e-5)
    np.testing.assert_allclose(out.std(), content_y.std(), rtol=1e-4)
    # An affine map: correlation with the input luminance is exactly 1.
    np.testing.assert_allclose(np.corrcoef(out.ravel(), style_y.ravel())[0, 1], 1.0, atol=1e-5)


def test_recombine_luminance_keeps_content_chrominance():
    content = images.load_image("skimage:astronaut", 40)[None]
    y = np.random.default_rng(2).uniform(0.3, 0.7, size=(*content.shape[:-1], 1))
    out = np.asarray(color.recombine_luminance(jnp.asarray(y, jnp.float32), jnp.asarray(content)))
    # Independent reference: scikit-image's YUV round trip with Y swapped in.
    yuv = rgb2yuv(content[0])
    yuv[..., 0] = y[0, ..., 0]
    want = np.clip(yuv2rgb(yuv), 0.0, 1.0)
    np.testing.assert_allclose(out[0], want, atol=1e-5)
    with pytest.raises(ValueError, match=r"\[B, H, W, 1\]"):
        color.recombine_luminance(jnp.zeros((1, 4, 4, 3)), jnp.asarray(content))


def test_load_image_sizes_and_range(tmp_path):
    chelsea = images.load_image("skimage:chelsea", 64)  # 300 x 451 originally
    assert chelsea.shape == (43, 64, 3) and chelsea.dtype == np.float32
    assert 0.0 <= chelsea.min() and chelsea.max() <= 1.0
    brick = images.load_image("skimage:brick", (20, 30))  # greyscale -> 3 channels
    assert brick.shape == (20, 30, 3)
    np.testing.assert_array_equal(brick[..., 0], brick[..., 2])
    # A PNG written and read back is the same image to 8-bit precision.
    path = images.save_png(chelsea, tmp_path / "x.png")
    back = images.load_image(path)
    np.testing.assert_allclose(back, chelsea, atol=0.5 / 255 + 1e-6)
    assert np.asarray(Image.open(path)).dtype == np.uint8


def test_unknown_images_name_the_choices(tmp_path):
    with pytest.raises(ValueError, match="skimage:chelsea"):
        images.load_image("skimage:lena")
    with pytest.raises(ValueError, match="does not exist"):
        images.load_image(str(tmp_path / "missing.png"))


def test_panel_and_cost_curves_are_real_pngs(tmp_path):
    a = images.load_image("skimage:chelsea", 32)
    b = images.load_image("skimage:immunohistochemistry", 32)
    panel = images.save_style_panel(a, [b, b], a, tmp_path / "panel.png", title="t")
    im = np.asarray(Image.open(panel))
    assert im.shape[1] > 3 * im.shape[0]  # four images side by side
    assert im[..., :3].std() > 10  # not blank
    curves = images.save_cost_curves(
        [0, 1, 2], {"style": [100.0, 10.0, 1.0], "tv": [0, 1, 2]}, tmp_path / "curves.png"
    )
    assert np.asarray(Image.open(curves)).shape[0] > 100


def test_to_uint8_scales_stretches_and_repeats_channels():
    x = np.array([[0.0, 0.5, 1.0], [0.25, 0.002, 0.998]], np.float32)[..., None]
    got = to_uint8(x)
    assert got.shape == (2, 3, 3) and got.dtype == np.uint8
    # By the formula: round(255 x) per value, the grey repeated on R, G and B.
    want = np.array([[0, 128, 255], [64, 1, 254]], np.uint8)
    np.testing.assert_array_equal(got, np.repeat(want[..., None], 3, axis=-1))
    # A mean/std-normalised image is stretched from its min..max onto 0..255.
    normalised = np.array([[[-2.0, 0.0, 2.0]]], np.float32)
    np.testing.assert_array_equal(to_uint8(normalised), [[[0, 128, 255]]])
    rgb = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    np.testing.assert_array_equal(to_uint8(rgb), rgb)  # uint8 is kept
    with pytest.raises(ValueError, match=r"\[H, W, 1\|3\]"):
        to_uint8(np.zeros((4, 4, 2)))


def test_save_png_writes_what_pil_reads_back(tmp_path):
    image = np.random.default_rng(0).uniform(size=(5, 7, 3)).astype(np.float32)
    path = images.save_png(image, tmp_path / "sub" / "y.png")  # creates the folder
    assert path == str(tmp_path / "sub" / "y.png")
    back = np.asarray(Image.open(path))
    np.testing.assert_array_equal(back, np.round(image * 255).astype(np.uint8))
