r"""Images/s the input pipeline delivers, to compare with what train steps consume.

  python benchmarks/input_pipeline.py                 # every case: digits, CIFAR-sized, JPEG
  python benchmarks/input_pipeline.py --batches=300 --batch=128

    python benchmarks/input_pipeline.py --cases=jpeg    # the ImageNet-shaped case only

Cases (``--cases``, default all):
- ``digits``: the LeNet-5 digits config's dataset (configs/lenet5_digits.py, 32x32x1);
- ``cifar``: a CIFAR-sized set (32x32x3): tfds ``cifar10`` if it is already prepared in
  the tfds data directory, else ``cifar_like`` built here in a temporary directory
  (50,000 real 32x32 patches cut from scikit-image's photographs, PNG-encoded like
  cifar10), with no augmentation, the standard CIFAR augmentation (mirror + padded
  crop) and a heavy list; cached in memory (the default for a set this size) and
  decoded every epoch;
- ``jpeg``: ImageNet-shaped JPEG files (``jpeg_like``: 2,560 photographs 300-500 px a
  side, cut from scikit-image's and resized, JPEG-encoded), decoded every epoch as
  ImageNet is, through the ImageNet configs' chains
  (``convjax.data.config.imagenet_chains``): the training chain (Inception's crop
  decoded alone from the JPEG, one resize to 224, flip, normalise), the eval chain
  (decode, shorter side to 256, centre 224, normalise), and for comparison the
  earlier pipeline (decode, resize the whole image to 224, then the random-resized
  crop and mirror on the batch in JAX).

Prints one line per case: steady images/s (the median of 5 windows of the timed
batches, after one whole epoch of warm-up, in which a cached pipeline fills its
cache), images/s over that first epoch, the seconds to the first batch (which
includes compiling the augmentation), and the CPU time per image in the timed windows
(all threads of the process) with the images/s one core gives at that cost -- the
figure that survives a machine shared with other work, where wall-clock rates do not.
Compare with ``benchmarks/train_step.py`` (LeNet-5 and ResNet-18-CIFAR images/s).
Use ``--data_dir`` to keep ``cifar_like`` and ``jpeg_like`` between runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from convjax.quiet import quiet_logging, quiet_startup  # noqa: E402

quiet_startup()  # the environment a training run has, before TensorFlow is imported

import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from configs import lenet5_digits  # noqa: E402
from convjax import data  # noqa: E402
from convjax.data.builders import build_offline  # noqa: E402
from convjax.data.config import imagenet_dataset  # noqa: E402
from convjax.data.skimage_sets import skimage_image_rgb  # noqa: E402

CIFAR_AUGMENT = "mirror, random_crop(pad=4)"
HEAVY_AUGMENT = (
    "mirror, random_crop(pad=4), rotate(15), shear(10), colour_shift(0.1), "
    "pca_lighting(0.1), brightness(0.2), contrast, saturation"
)
WINDOWS = 5
CASES = ("digits", "cifar", "jpeg")
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)


class PhotoCrops(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Examples cut from scikit-image's photographs (``example``), random labels."""

    VERSION = tfds.core.Version("1.0.0")
    SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field")
    IMAGE = tfds.features.Image()
    NUM_CLASSES = 10
    SPLITS = {"train": 0}  # split -> example count

    def example(self, source, rng):
        """One uint8 [H, W, 3] image from ``source`` [H_s, W_s, 3]."""
        raise NotImplementedError

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": self.IMAGE,
                    "label": tfds.features.ClassLabel(num_classes=self.NUM_CLASSES),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {
            split: self._generate(count, seed)
            for seed, (split, count) in enumerate(self.SPLITS.items())
        }

    def _generate(self, count, seed):
        rng = np.random.default_rng(seed)
        sources = [skimage_image_rgb(name) for name in self.SOURCES]
        for i in range(count):
            image = self.example(sources[i % len(sources)], rng)
            yield i, {"image": image, "label": int(rng.integers(self.NUM_CLASSES))}

    def _generate_examples(self):
        raise NotImplementedError


class CifarLike(PhotoCrops):
    """50,000 train / 10,000 test 32x32x3 patches of scikit-image photographs, 10 labels."""

    IMAGE = tfds.features.Image(shape=(32, 32, 3))
    SPLITS = {"train": 50_000, "test": 10_000}

    def example(self, source, rng):
        y = rng.integers(0, source.shape[0] - 32)
        x = rng.integers(0, source.shape[1] - 32)
        return source[y : y + 32, x : x + 32]


class JpegLike(PhotoCrops):
    """2,560 train / 256 validation JPEG photographs 300-500 px a side (ImageNet's
    files average about 400x350), each a random crop of a scikit-image photograph
    resized to a random size; 1,000 labels."""

    IMAGE = tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")
    NUM_CLASSES = 1000
    SPLITS = {"train": 2_560, "validation": 256}

    def example(self, source, rng):
        from PIL import Image

        crop_h, crop_w = (int(rng.integers(n // 2, n + 1)) for n in source.shape[:2])
        top = int(rng.integers(0, source.shape[0] - crop_h + 1))
        left = int(rng.integers(0, source.shape[1] - crop_w + 1))
        crop = Image.fromarray(source[top : top + crop_h, left : left + crop_w])
        height, width = (int(v) for v in rng.integers(300, 501, size=2))
        return np.asarray(crop.resize((width, height), Image.BILINEAR))


def images_per_second(dataset, batch, batches):
    """(steady images/s, seconds to the first batch, images/s over the first epoch,
    CPU milliseconds per image in the timed windows, all threads of this process)."""
    begin = time.perf_counter()
    iterator = data.create_train_iterator(dataset, global_batch_size=batch, seed=0)
    next(iterator)
    first = time.perf_counter() - begin
    # Warm up for a whole epoch: a cached pipeline fills its cache (decoding every
    # example once) during the first one; the rate after it is the steady one.
    epoch_batches = -(-data.dataset_metadata(dataset).num_train // batch)
    begin = time.perf_counter()
    for _ in range(epoch_batches):
        next(iterator)
    first_epoch = epoch_batches * batch / (time.perf_counter() - begin)
    rates = []
    cpu_begin = time.process_time()
    for _ in range(WINDOWS):  # The median of several windows: the machine is shared.
        begin = time.perf_counter()
        for _ in range(batches // WINDOWS):
            next(iterator)
        rates.append(batches // WINDOWS * batch / (time.perf_counter() - begin))
    cpu_ms = 1e3 * (time.process_time() - cpu_begin) / (batches // WINDOWS * WINDOWS * batch)
    return statistics.median(rates), first, first_epoch, cpu_ms


def build_here(config):
    """Builds a dataset this script defines, unless prepared (one line of output)."""
    builder = tfds.builder(config.name, data_dir=config.data_dir)
    if not builder.is_prepared():
        build_offline(builder, tfds.download.DownloadConfig())


def cifar_sized_config(data_dir):
    config = data.default_dataset_config()
    config.update(mean=CIFAR_MEAN, std=CIFAR_STD, eval_split="test")
    try:
        if tfds.builder("cifar10").is_prepared():
            config.name = "cifar10"
            return config
    except Exception:  # noqa: BLE001 -- no tfds data directory, or no cifar10 there.
        pass
    config.update(name="cifar_like", data_dir=data_dir)
    print("cifar10 is not prepared here: cifar_like (50,000 real 32x32 patches) instead.")
    build_here(config)
    return config


def jpeg_config(data_dir):
    """The ImageNet configs' dataset section, reading ``jpeg_like`` (built in data_dir)."""
    config = imagenet_dataset()
    config.update(name="jpeg_like", data_dir=data_dir, cache=False)
    build_here(config)
    return config


EARLIER_JPEG = dict(  # decode, resize the whole image, then crop and mirror in JAX
    pp_train="channels(3)|resize(224)|normalize('imagenet')",
    pp_eval="channels(3)|resize(224)|normalize('imagenet')",
    augment="random_resized_crop(scale=(0.08, 1.0)), mirror",
)


def cifar_rows(data_dir, batch, batches):
    cifar = cifar_sized_config(data_dir)
    rows = []
    for cache in (True, False):
        for label, spec in (
            ("no augmentation", ""),
            ("mirror+crop", CIFAR_AUGMENT),
            ("heavy", HEAVY_AUGMENT),
        ):
            case = cifar.copy_and_resolve_references()
            case.update(cache=cache, augment=spec)
            name = f"{cifar.name} 32x32x3, {label}, {'cached' if cache else 'decoded'}"
            rows.append((name, *images_per_second(case, batch, batches)))
    return rows


def jpeg_rows(data_dir, batch, batches):
    jpeg = jpeg_config(data_dir)
    cases = (
        ("train chain: decode_and_crop + resize + flip", {}),
        ("eval chain: decode, resize_small 256, crop 224", {"pp_train": jpeg.pp_eval}),
        ("earlier: decode, resize 224, crop+mirror in JAX", EARLIER_JPEG),
    )
    rows = []
    for label, overrides in cases:
        case = jpeg.copy_and_resolve_references()
        case.update(overrides)
        rows.append((f"jpeg_like, {label}", *images_per_second(case, batch, batches)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--cases", default=",".join(CASES), help=f"any of {', '.join(CASES)}")
    parser.add_argument(
        "--data_dir",
        default=None,
        help="where to keep cifar_like and jpeg_like (default: a temporary dir)",
    )
    args = parser.parse_args()
    quiet_logging()
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown or not cases:
        parser.error(f"--cases: unknown {unknown}; choose from {', '.join(CASES)}")
    rows = []
    if "digits" in cases:
        digits = lenet5_digits.get_config().dataset
        name = "digits 32x32x1 (LeNet-5 config)"
        rows.append((name, *images_per_second(digits, args.batch, args.batches)))
    with tempfile.TemporaryDirectory() as tmp_dir:
        if "cifar" in cases:
            rows += cifar_rows(args.data_dir or tmp_dir, args.batch, args.batches)
        if "jpeg" in cases:
            rows += jpeg_rows(args.data_dir or tmp_dir, args.batch, args.batches)
    print(
        f"\nbatch {args.batch}, {args.batches} timed batches (median of {WINDOWS} windows), "
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'pipeline':<58} {'images/s':>10} {'first epoch':>12} {'first batch (s)':>16} "
        f"{'CPU ms/image':>13} {'images/s/core':>14}"
    )
    for name, rate, first, first_epoch, cpu_ms in rows:
        print(
            f"{name:<58} {rate:>10,.0f} {first_epoch:>12,.0f} {first:>16.2f} "
            f"{cpu_ms:>13.2f} {1e3 / cpu_ms:>14,.0f}"
        )
    if "cifar" in cases:
        print(f"heavy augmentation: {HEAVY_AUGMENT}")


if __name__ == "__main__":
    main()
