"""The preprocessing op registry and the ImageNet chains, against independent references
(PIL, numpy, torch), and the JPEG pipeline's determinism, resume and undecodable images."""

import io
import itertools
import math

import numpy as np
import optax
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import torch
from PIL import Image
from scipy import stats

from convjax import data
from convjax.data import preprocess, preprocess_ops
from convjax.data.config import imagenet_chains
from convjax.data.skimage_sets import skimage_image_rgb

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")  # 512x512, 300x451, 400x600, 427x640


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def run_chain(chain: str, encoded: bytes, seed=(0, 0)) -> np.ndarray:
    parsed = preprocess.parse_chain(chain)
    example = {"image": tf.constant(encoded)}
    out = preprocess.apply_example_ops(parsed.example_ops, example, tf.constant(seed, tf.int64))
    return out["image"].numpy()


# ------------------------------------------------------------------------ registry
def test_every_op_is_documented_and_listed():
    names = data.list_ops()
    for name in (
        "decode", "decode_jpeg_and_inception_crop", "inception_crop", "resize", "resize_small",
        "central_crop", "flip_lr", "value_range", "normalize", "onehot", "channels",
    ):  # fmt: skip
        assert name in names
        assert preprocess.op_info(name).make.__doc__.strip()


def test_bad_chains_fail_with_one_line_at_config_time():
    with pytest.raises(ValueError, match=r"Unknown preprocessing op 'flip'; valid ops: .*flip_lr"):
        data.resolve({"pp_train": "decode(3)|flip|normalize", "pp_eval": "decode(3)"})
    with pytest.raises(ValueError, match=r"expected resize_small\(size, method='bilinear'"):
        data.resolve({"pp_train": "decode|resize_small(256, 'bilinear', True, 4)"})
    with pytest.raises(ValueError, match=r"method must be one of .*'bilinear'"):
        data.parse_chain("resize(32, method='cubic')")
    with pytest.raises(ValueError, match="area must be"):
        data.parse_chain("decode_jpeg_and_inception_crop(224, area=(0.5, 0.1))")
    with pytest.raises(ValueError, match="must come first"):
        data.parse_chain("resize(32)|decode")
    with pytest.raises(ValueError, match="pixel ops .* go last"):
        data.parse_chain("decode|normalize|flip_lr")
    with pytest.raises(ValueError, match="replace dataset.image_size"):
        data.resolve({"pp_train": "decode", "image_size": (32, 32)})
    for error in (ValueError,):
        with pytest.raises(error) as info:
            data.parse_chain("nope(")
        assert "\n" not in str(info.value)


def test_equal_sections_share_one_spec():
    section = data.default_dataset_config()
    assert data.resolve(section) is data.resolve(section.to_dict())
    assert data.resolve(data.resolve(section)) is data.resolve(section)
    other = data.default_dataset_config()
    other.image_size = (16, 16)
    assert data.resolve(other) is not data.resolve(section)
    assert str(data.resolve(other).eval_chain) == "resize(size=(16, 16), method='bilinear')"


# ------------------------------------------------------------------ Inception crop
@pytest.mark.parametrize("name", ["chelsea", "rocket"])
def test_inception_crop_is_the_window_of_the_full_image_resized(name):
    """decode_and_crop_jpeg + one resize == PIL: decode the whole JPEG, crop the same
    window, resize (bilinear, antialiased) -- within one grey level."""
    encoded = jpeg_bytes(skimage_image_rgb(name))
    full = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
    height, width = full.shape[:2]
    checked = 0
    for seed in range(12):
        window = preprocess_ops.inception_window(tf.constant([seed, 1], tf.int64), height, width)
        top, left, h, w = (int(v) for v in window)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        crop = Image.fromarray(full[top : top + h, left : left + w])
        reference = np.asarray(crop.resize((96, 96), Image.BILINEAR)).astype(int)
        op = preprocess.make_op("decode_jpeg_and_inception_crop(96)").fn
        # The op draws its window from the seed it is given: the same window.
        got = op({"image": tf.constant(encoded)}, tf.constant([seed, 1], tf.int64))["image"]
        np.testing.assert_array_less(np.abs(got.numpy().astype(int) - reference), 2)
        checked += 1
    assert checked == 12


def test_training_chains_fast_crop_is_the_fast_decode_cropped_and_resized():
    """The ImageNet training chain's crop (fast DCT, no antialiasing) == TensorFlow's
    default decode of the whole JPEG, the same window cut out, torch's bilinear resize."""
    encoded = jpeg_bytes(skimage_image_rgb("coffee"))
    full = tf.io.decode_jpeg(encoded, channels=3).numpy()  # TensorFlow's default DCT
    train, _ = imagenet_chains(224)
    crop_op = preprocess.parse_chain(train).ops[0]
    assert crop_op.kwargs["fast_dct"] and not crop_op.kwargs["antialias"]
    for seed in range(6):
        seed = tf.constant([seed, 2], tf.int64)
        top, left, h, w = (int(v) for v in preprocess_ops.inception_window(seed, *full.shape[:2]))
        window = torch.from_numpy(full[top : top + h, left : left + w]).permute(2, 0, 1)
        reference = torch.nn.functional.interpolate(
            window[None].float(), size=(224, 224), mode="bilinear", align_corners=False
        )
        reference = reference.round()[0].permute(1, 2, 0).numpy().astype(int)
        got = crop_op.fn({"image": tf.constant(encoded)}, seed)["image"].numpy().astype(int)
        assert np.abs(got - reference).max() <= 1


def torchvision_random_resized_crop(rng, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params as documented, in numpy."""
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize("height, width", [(375, 500), (500, 240)])
def test_inception_windows_follow_the_area_and_aspect_distributions(height, width):
    draws = 10_000
    seeds = tf.stack(
        [tf.range(draws, dtype=tf.int64), tf.fill([draws], tf.constant(7, tf.int64))], 1
    )
    window = lambda s: tf.stack(preprocess_ops.inception_window(s, height, width))  # noqa: E731
    windows = tf.function(lambda s: tf.vectorized_map(window, s))(seeds).numpy()
    rng = np.random.default_rng(0)
    reference = np.array(
        [torchvision_random_resized_crop(rng, height, width) for _ in range(draws)]
    )
    for got in (windows, reference):
        top, left, h, w = got.T
        assert np.all(top >= 0) and np.all(top + h <= height)
        assert np.all(left >= 0) and np.all(left + w <= width)
    area = lambda win: win[:, 2] * win[:, 3] / (height * width)  # noqa: E731
    aspect = lambda win: np.log(win[:, 3] / win[:, 2])  # noqa: E731
    # The area fraction is uniform on [0.08, 1] up to the attempts that do not fit, the
    # log aspect ratio uniform on [log 3/4, log 4/3]: the same distributions as torchvision's.
    assert stats.ks_2samp(area(windows), area(reference)).pvalue > 1e-3
    assert stats.ks_2samp(aspect(windows), aspect(reference)).pvalue > 1e-3
    small = area(windows) < 0.3  # every such try fits: uniform there
    assert stats.kstest((area(windows)[small] - 0.08) / 0.22, "uniform").pvalue > 1e-3
    assert area(windows).min() >= 0.079 and np.abs(aspect(windows)).max() <= math.log(4 / 3) + 0.02


# ----------------------------------------------------------------------- eval chain
@pytest.mark.parametrize("name", PHOTOS)
def test_eval_chain_is_torchvisions_resize_256_and_centre_crop_224(name):
    """torchvision is not a dependency: its tensor Resize(256) is torch's
    interpolate(bilinear, antialias=True) to (256, int(256 * long / short)), and
    CenterCrop(224) starts at int(round((side - 224) / 2.0)) (its documented arithmetic)."""
    image = skimage_image_rgb(name)
    _, evaluate = imagenet_chains(224)
    chain = evaluate.rsplit("|", 1)[0]  # without the normalisation
    got = run_chain(chain, png_bytes(image)).astype(int)
    height, width = image.shape[:2]
    short, long = min(height, width), max(height, width)
    size = (256, 256 * long // short) if height <= width else (256 * long // short, 256)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    resized = torch.nn.functional.interpolate(
        tensor, size=size, mode="bilinear", antialias=True, align_corners=False
    )
    resized = resized.round().clamp(0, 255)[0].permute(1, 2, 0).numpy().astype(int)
    top, left = (int(round((s - 224) / 2.0)) for s in size)
    reference = resized[top : top + 224, left : left + 224]
    assert got.shape == reference.shape == (224, 224, 3)
    assert np.abs(got - reference).max() <= 1


# --------------------------------------------------------------------- other ops
def test_flip_central_crop_and_resize_move_boxes_and_landmarks():
    image = np.zeros((40, 60, 3), np.uint8)
    image[10:20, 5:15] = 255  # a bright box at rows 10..20, cols 5..15
    boxes = np.array([[10 / 40, 5 / 60, 20 / 40, 15 / 60]], np.float32)
    landmarks = np.array([[[10 / 40, 5 / 60], [20 / 40, 15 / 60]]], np.float32)
    example = {"image": tf.constant(image), "boxes": boxes, "landmarks": landmarks}
    always = preprocess.make_op("flip_lr(p=1.0, landmark_permutation=(1, 0))").fn
    out = always(example, tf.constant([0, 0], tf.int64))
    np.testing.assert_array_equal(out["image"].numpy(), image[:, ::-1])
    np.testing.assert_allclose(out["boxes"], [[10 / 40, 45 / 60, 20 / 40, 55 / 60]], atol=1e-6)
    np.testing.assert_allclose(
        out["landmarks"], [[[20 / 40, 45 / 60], [10 / 40, 55 / 60]]], atol=1e-6
    )
    never = preprocess.make_op("flip_lr(p=0.0)").fn(example, tf.constant([0, 0], tf.int64))
    np.testing.assert_array_equal(never["image"].numpy(), image)
    crop = preprocess.make_op("central_crop((20, 30))").fn(example)  # rows 10..30, cols 15..45
    np.testing.assert_array_equal(crop["image"].numpy(), image[10:30, 15:45])
    np.testing.assert_allclose(crop["boxes"], [[0.0, 0.0, 0.5, 0.0]], atol=1e-6)
    small = preprocess.make_op("resize_small(20)").fn(example)
    assert small["image"].shape == (20, 30, 3)  # 40x60 -> shorter side 20
    np.testing.assert_array_equal(small["boxes"], boxes)


def test_onehot_value_range_and_normalize():
    targets = preprocess.make_op("onehot(5, smoothing=0.1)").fn({"label": tf.constant(3)})
    expected = optax.smooth_labels(np.eye(5, dtype=np.float32)[3], 0.1)
    np.testing.assert_allclose(targets["label"], expected, atol=1e-7)
    pixels = np.random.default_rng(0).uniform(size=(2, 4, 4, 3)).astype(np.float32)
    ranged = preprocess.make_op("value_range(-1, 1)").fn(tf.constant(pixels))
    np.testing.assert_allclose(ranged, pixels * 2 - 1, atol=1e-6)
    normalised = preprocess.make_op("normalize('imagenet')").fn(pixels)  # numpy works too
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(normalised, (pixels - mean) / std, atol=1e-5)


# -------------------------------------------------------- a JPEG dataset, end to end
class PhotoJpegs(tfds.core.GeneratorBasedBuilder):
    """48 JPEG crops of scikit-image photographs of different sizes and aspects (one
    undecodable file at index 5 in ``with_bad``), 10 labels."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="good"),
        tfds.core.BuilderConfig(name="with_bad"),
    ]

    def _info(self):
        features = {
            "image": tfds.features.Image(encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=10),
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"train": self._generate(48, 0), "test": self._generate(12, 1)}

    def _generate(self, count, seed):
        rng = np.random.default_rng(seed)
        sources = [skimage_image_rgb(name) for name in PHOTOS]
        for i in range(count):
            source = sources[i % len(sources)]
            h, w = int(rng.integers(60, source.shape[0])), int(rng.integers(60, source.shape[1]))
            image = np.ascontiguousarray(source[:h, :w])
            encoded = jpeg_bytes(image)
            if self.builder_config.name == "with_bad" and i == 5 and count == 48:
                encoded = encoded[:20] + b"\x00" * 50  # a header, then nothing decodable
            yield i, {"image": io.BytesIO(encoded), "label": i % 10}

    def _generate_examples(self):
        raise NotImplementedError


@pytest.fixture(scope="module")
def jpeg_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("jpegs"))
    for name in ("photo_jpegs/good", "photo_jpegs/with_bad"):
        tfds.builder(name, data_dir=path).download_and_prepare()
    return path


def jpeg_section(data_dir, name="photo_jpegs/good", **overrides):
    section = data.default_dataset_config()
    section.update(name=name, data_dir=data_dir, shuffle_buffer=48, cache=False)
    train, evaluate = imagenet_chains(32, resize_side=36)
    section.update(pp_train=train, pp_eval=evaluate, **overrides)
    return section


def take(iterator, n):
    return list(itertools.islice(iterator, n))


def test_jpeg_chains_resume_mid_epoch_on_one_and_two_hosts(jpeg_dir):
    section = jpeg_section(jpeg_dir)
    meta = data.dataset_metadata(section)
    assert meta.image_shape == (32, 32, 3) and meta.num_train == 48
    for hosts, host in ((1, 0), (2, 1)):  # one host; the second of two
        kwargs = dict(global_batch_size=8, seed=3, process_index=host, process_count=hosts)
        full = take(data.create_train_iterator(section, **kwargs), 9)  # crosses an epoch
        resumed = take(data.create_train_iterator(section, start_step=4, **kwargs), 5)
        for a, b in zip(full[4:], resumed, strict=True):
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["label"], b["label"])
    one = take(data.create_train_iterator(section, global_batch_size=8, seed=3), 1)[0]
    other = take(data.create_train_iterator(section, global_batch_size=8, seed=4), 1)[0]
    assert not np.array_equal(one["image"], other["image"])
    assert one["image"].shape == (8, 32, 32, 3) and one["image"].dtype == np.float32


def test_undecodable_jpeg_is_skipped_with_one_warning_or_fails(jpeg_dir, caplog):
    section = jpeg_section(jpeg_dir, name="photo_jpegs/with_bad")
    with caplog.at_level("WARNING"):
        batches = list(data.create_eval_iterator(section, global_batch_size=8))
        train = take(data.create_train_iterator(section, global_batch_size=8, seed=0), 6)
    assert sum(b["mask"].sum() for b in batches) == 12  # the test split has no bad file
    lines = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
    assert lines == ["Skipped 1 undecodable image in photo_jpegs/with_bad train so far "
                     "(dataset.on_decode_error='skip'; 'fail' stops instead)."]  # fmt: skip
    assert len(train) == 6
    failing = jpeg_section(jpeg_dir, name="photo_jpegs/with_bad", on_decode_error="fail")
    with pytest.raises(tf.errors.InvalidArgumentError):
        take(data.create_train_iterator(failing, global_batch_size=8, seed=0), 6)


def test_inference_reuses_the_eval_chain(jpeg_dir):
    section = jpeg_section(jpeg_dir)
    evaluated = next(data.create_eval_iterator(section, global_batch_size=4))["image"]
    builder = tfds.builder("photo_jpegs/good", data_dir=jpeg_dir)
    records = builder.as_dataset(split="test", decoders={"image": tfds.decode.SkipDecoding()})
    files = [example["image"] for example in tfds.as_numpy(records.take(4))]
    images = [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files]  # as read
    from convjax.data.pipeline import preprocess_images

    np.testing.assert_array_equal(preprocess_images(images, section), evaluated)


def test_inference_reads_feature_dtypes_without_tfds_deprecation_warnings(jpeg_dir, monkeypatch):
    """tfds warns "`TensorInfo.dtype` is deprecated" (at most 10 times a process) when
    that attribute is read: count the reads directly."""
    from tensorflow_datasets.core.features import feature

    from convjax.data.pipeline import preprocess_images

    reads = []
    monkeypatch.setattr(feature, "log_tf_warning", lambda name: reads.append(name))
    info = tfds.builder("photo_jpegs/good", data_dir=jpeg_dir).info.features.get_tensor_info()
    assert info["label"].dtype == tf.int64 and reads == ["TensorInfo"]  # the counter works
    reads.clear()
    image = skimage_image_rgb("coffee")
    assert preprocess_images([image], jpeg_section(jpeg_dir)).shape == (1, 32, 32, 3)
    assert reads == []
