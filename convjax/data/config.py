"""The ``dataset`` section of an experiment config, with its defaults.

Fields (all optional in a config; missing ones take these defaults):

- ``name``: any tfds name (``'sklearn_digits'``, ``'mnist'``, ``'cifar10'``, ``'imagenette'``).
- ``data_dir``: tfds data directory; ``None`` is tfds' default (``~/tensorflow_datasets``).
- ``manual_dir``: where manually downloaded files are for datasets that need them
  (imagenet2012, ...); ``None`` is ``<data_dir>/downloads/manual``.
- ``train_split`` / ``eval_split``: tfds split strings (``'train'``, ``'train[:90%]'``).
- ``image_key`` / ``label_key``: the tfds feature names read by the default example function.
- ``image_size``: ``(H, W)`` to resize every image to, or ``None`` to keep the stored size
  (which must then be fixed).
- ``resize_mode``: ``'stretch'`` (to exactly ``image_size``; keeps normalised boxes and
  landmarks valid) or ``'center_crop'`` (keep the aspect ratio: scale to cover
  ``image_size``, then crop the centre; for classification of photographs).
- ``resize_method``: a ``tf.image.resize`` method (``'bilinear'``, ``'bicubic'``, ``'area'``, ...).
- ``channels``: 1 or 3 to convert gray <-> RGB, or ``None`` to keep.
- ``mean`` / ``std``: per-channel normalisation in 0..1 units, applied after scaling pixels
  to 0..1 (``None``: no normalisation, images stay in 0..1).
- ``augment``: augmentation spec for training batches (names with arguments, e.g.
  ``"mirror, random_crop(pad=4)"``; see ``convjax.data.augment``); empty for none.
- ``augment_in_pipeline``: apply ``augment`` in the input pipeline (jitted JAX on the
  host CPU, keys from ``(seed, host, step)``). Set False to apply it on device in the
  train step instead (keys from ``(seed, device, step)``): the pipeline then yields
  images in 0..1, unnormalised, and the step applies
  ``convjax.data.pipeline.device_augment(dataset, seed=...)`` (the same augmenter,
  then the normalisation) before the loss. Evaluation batches are normalised either way.
- ``landmark_flip_permutation``: [K] index of each landmark's mirror partner, used by
  ``mirror`` on a ``landmarks`` feature (``None``: no re-indexing).
- ``shuffle_buffer``: examples in the shuffle buffer (capped at the host's split size).
- ``cache``: keep decoded examples in memory (``None``: automatically when they fit
  in ``cache_max_bytes``).
- ``example_fn``: name of a registered example function (``None``: the one registered
  for ``name``, else the default image/label one); see ``convjax.data.examples``.
- ``num_classes``: overrides the class count read from the label feature.
- ``pp_train`` / ``pp_eval``: the per-example preprocessing chains
  (:mod:`convjax.data.preprocess`), e.g.
  ``"decode_jpeg_and_inception_crop(224)|flip_lr|normalize('imagenet')"``. ``None``
  (the default) builds both from ``channels``, ``image_size``/``resize_mode``/
  ``resize_method`` and ``mean``/``std``; a config that sets a chain leaves those ``None``.
- ``on_decode_error``: ``'skip'`` an image that cannot be decoded (counted, with a
  warning naming how many) or ``'fail'`` (stop with the decoder's error).
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder


def default_dataset_config() -> ml_collections.ConfigDict:
    """The default ``dataset`` config: the offline 32x32 digits, no augmentation.

    Optional fields are typed placeholders (``None`` until set), so they can be
    overridden from the command line: ``--config.dataset.data_dir=/data``.
    """
    return ml_collections.ConfigDict(
        {
            "name": "sklearn_digits",
            "data_dir": placeholder(str),
            "manual_dir": placeholder(str),
            "train_split": "train",
            "eval_split": "test",
            "image_key": "image",
            "label_key": "label",
            "image_size": placeholder(tuple),
            "resize_mode": "stretch",
            "resize_method": "bilinear",
            "channels": placeholder(int),
            "mean": placeholder(object),
            "std": placeholder(object),
            "augment": "",
            "augment_in_pipeline": True,
            "landmark_flip_permutation": None,
            "shuffle_buffer": 10_000,
            "cache": placeholder(bool),
            "cache_max_bytes": 2 * 1024**3,
            "example_fn": placeholder(str),
            "num_classes": placeholder(int),
            "pp_train": placeholder(object),
            "pp_eval": placeholder(object),
            "on_decode_error": "skip",
        }
    )


def resolve_dataset_config(dataset: ml_collections.ConfigDict | dict) -> ml_collections.ConfigDict:
    """Returns a copy of ``dataset`` with every missing field set to its default."""
    given = dataset.to_dict() if isinstance(dataset, ml_collections.ConfigDict) else dict(dataset)
    # A fresh ConfigDict, so a field may change type (an augment string or a list).
    return ml_collections.ConfigDict({**default_dataset_config().to_dict(), **given})


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_chains(
    side: int = 224,
    *,
    crop_area: tuple[float, float] = (0.08, 1.0),
    resize_side: int | None = None,
) -> tuple[str, str]:
    """The standard ImageNet chains at ``side`` (torchvision's and flax's recipe):

    - train: Inception's crop at full resolution (area ``crop_area``, aspect 3/4..4/3,
      only the window decoded) resized to ``side``, a random mirror, ImageNet's
      normalisation. Decoded with libjpeg's fast DCT and resized bilinearly without
      antialiasing, as flax's and big_vision's ImageNet pipelines do: half the CPU time
      per image of the accurate DCT with an antialiased resize (PIL's pixels, which
      only the eval chain needs to match);
    - eval: the shorter side resized to ``resize_side`` (default ``side * 256 / 224``,
      rounded: 256 for 224), the centre ``side`` x ``side``, the same normalisation.
    """
    resize_side = resize_side or round(side * 256 / 224)
    area = f"({crop_area[0]:g}, {crop_area[1]:g})"
    crop = f"decode_jpeg_and_inception_crop({side}, area={area}, antialias=False, fast_dct=True)"
    train = f"{crop}|flip_lr|normalize('imagenet')"
    evaluate = f"decode(3)|resize_small({resize_side})|central_crop({side})|normalize('imagenet')"
    return train, evaluate


def imagenet_dataset(
    imagenette: bool = False,
    *,
    image_size: int | None = None,
    crop_area: tuple[float, float] = (0.08, 1.0),
    augment: str = "",
) -> ml_collections.ConfigDict:
    """ImageNet (``imagenet2012``, 224x224) or Imagenette (``imagenette/160px-v2``,
    128x128) through :func:`imagenet_chains`; ``image_size`` overrides the side,
    ``crop_area`` the Inception crop's area range, and ``augment`` adds batch
    augmentation in JAX (``pca_lighting``, ...; :mod:`convjax.data.augment`)."""
    dataset = default_dataset_config()
    dataset.name = "imagenette/160px-v2" if imagenette else "imagenet2012"
    dataset.eval_split = "validation"
    side = image_size or (128 if imagenette else 224)
    dataset.pp_train, dataset.pp_eval = imagenet_chains(side, crop_area=crop_area)
    dataset.augment = augment
    return dataset


def digits_dataset(image_size: int = 32, channels: int = 1) -> ml_collections.ConfigDict:
    """The offline digits at ``image_size`` with ``channels`` (1, or 3 for RGB models),
    normalised to [-1, 1]: what every config's ``:smoke`` variant trains on."""
    dataset = default_dataset_config()
    dataset.name = "sklearn_digits"
    dataset.image_size = (image_size, image_size)
    dataset.channels = channels
    dataset.mean = (0.5,) * channels
    dataset.std = (0.5,) * channels
    return dataset
