"""The imagenet2012 path end to end without the data: a tiny ImageNet-format manual
directory (real JPEGs of different sizes and aspects in ILSVRC2012's tar layout) through
tfds' own imagenet2012 builder, the ImageNet chains and a few steps of training and
evaluation of the ResNet config."""

import io
import tarfile

import numpy as np
from PIL import Image

from configs import resnet_imagenet
from convjax import data
from convjax.data.config import imagenet_chains, imagenet_dataset
from convjax.data.skimage_sets import skimage_image_rgb
from convjax.runs.train import train_and_evaluate

SYNSETS = ("n01440764", "n01443537")  # the first two of imagenet2012's 1,000 classes
SIZES = ((375, 500), (500, 333), (120, 400), (300, 300))  # (height, width)


def _jpeg(rng, sources, size) -> bytes:
    source = sources[int(rng.integers(len(sources)))]
    image = Image.fromarray(source).resize(size[::-1], Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _add(archive: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    archive.addfile(info, io.BytesIO(payload))


def write_manual_dir(path) -> None:
    """ILSVRC2012_img_train.tar (one tar per synset) and ILSVRC2012_img_val.tar."""
    rng = np.random.default_rng(0)
    sources = [skimage_image_rgb(n) for n in ("astronaut", "chelsea", "coffee", "rocket")]
    with tarfile.open(path / "ILSVRC2012_img_train.tar", "w") as train:
        for synset in SYNSETS:
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as images:
                for i, size in enumerate(SIZES * 2):
                    _add(images, f"{synset}_{i}.JPEG", _jpeg(rng, sources, size))
            _add(train, f"{synset}.tar", inner.getvalue())
    with tarfile.open(path / "ILSVRC2012_img_val.tar", "w") as val:
        for i, size in enumerate(SIZES * 2):
            _add(val, f"ILSVRC2012_val_{i + 1:08d}.JPEG", _jpeg(rng, sources, size))


def test_imagenet2012_builder_chains_train_and_evaluate(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    write_manual_dir(manual)
    config = resnet_imagenet.get_config("resnet18,smoke")
    config.dataset = imagenet_dataset()
    # The ImageNet chains at 32 pixels (36 before the centre crop), so a step takes little.
    config.dataset.pp_train, config.dataset.pp_eval = imagenet_chains(32, resize_side=36)
    config.dataset.update(data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    config.model_kwargs.num_classes = 1000
    config.update(batch_size=4, eval_batch_size=8)
    meta = data.dataset_metadata(config.dataset)
    assert (meta.num_train, meta.num_eval, meta.image_shape) == (16, 8, (32, 32, 3))
    assert meta.num_classes == 1000
    batch = next(data.create_train_iterator(config.dataset, global_batch_size=4, seed=0))
    assert batch["image"].shape == (4, 32, 32, 3) and set(batch["label"]) <= {0, 1}
    metrics = train_and_evaluate(config, str(tmp_path / "workdir"))
    assert np.isfinite(metrics["loss"]) and metrics["count"] == 8
