"""What the experiment configs share.

- :func:`parse_arg`: the ``:arg`` of ``--config=configs/x.py:arg`` (``resnet56,smoke``)
  parsed once, with one clear error for an unknown variant.
- :func:`set_run`: batch sizes, steps and cadences, plus the tail every training config
  carries (``keep_checkpoints``, ``seed``, ``parallel``, ``dtype``, ``conv_impl``).
- :func:`shrink`: the common part of a ``:smoke`` variant (a few steps, evaluated and
  checkpointed at the end, no warmup).
- Optimizer sections (:func:`adam`, :func:`momentum`) and dataset sections
  (:func:`cifar10_dataset`, :func:`shapes_dataset`).
- :func:`evals`: the evaluators a run declares (``config.evals``; ``eval``, the task's
  own eval sums, in every training config).
- Family bases: :func:`classification` (ImageNet, CIFAR and digits classifiers),
  :func:`imagenet_classification`, :func:`digits_smoke` and :func:`yolo`.

Each ``configs/<experiment>.py`` keeps its own docstring (run command and expected
result) and states only what differs from its family. Dataset sections import
``convjax.data`` (and with it TensorFlow) only when they are built, so a config without
one (``style_transfer``) loads in a blink.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import ml_collections

IMAGENET_TRAIN = 1_281_167  # images in imagenet2012's train split
IMAGENETTE_TRAIN = 9_469  # images in imagenette/160px-v2's train split
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR_AUGMENT = "mirror, random_crop(pad=4)"


# ---------------------------------------------------------------------------- the :arg
def parse_arg(
    arg: str | None,
    *,
    models: Sequence[str] = (),
    model: str | None = None,
    aliases: Mapping[str, str] | None = None,
    **spec: Any,
) -> ml_collections.ConfigDict:
    """Parses ``arg``, the text after ``:`` in ``--config=configs/x.py:arg``.

    ``arg`` is comma-separated words, in the style of big_vision's ``parse_arg``:

    - a name from ``spec`` whose default is a bool is a flag: ``smoke`` sets it True;
    - ``name=value`` sets another ``spec`` entry, converted to its default's type;
    - a name from ``models`` chooses the model (``model`` when none is given).

    ``aliases`` maps a word to the words it stands for (``landmarks_smoke`` ->
    ``landmarks,smoke``).

    Returns:
      A ConfigDict with every ``spec`` name, and ``model`` when ``models`` is given.
      ``parse_arg("resnet56,smoke", models=MODELS, model="resnet20", smoke=False)``
      -> ``{'model': 'resnet56', 'smoke': True}``.

    Raises:
      ValueError: an unknown word, or two models; the message lists the valid words.
    """
    flags = [name for name, default in spec.items() if isinstance(default, bool)]
    valued = [f"{name}=<{type(default).__name__}>" for name, default in spec.items()]
    valid = ", ".join(flags + [v for v in valued if v.split("=")[0] not in flags] + list(models))
    words = [w.strip() for w in (arg or "").split(",") if w.strip()]
    words = [part for w in words for part in (aliases or {}).get(w, w).split(",")]
    result = ml_collections.ConfigDict(dict(spec))
    chosen = [w for w in words if w in models]
    if len(chosen) > 1:
        raise ValueError(f"Config variant {arg!r} names several models {chosen}; choose one.")
    if models:
        result.model = chosen[0] if chosen else model
    unknown = []
    for word in words:
        name, equals, value = word.partition("=")
        has_value = bool(equals)
        if word in models:
            continue
        if name not in spec or has_value == (name in flags):
            unknown.append(word)
        elif has_value:
            result[name] = type(spec[name])(value)
        else:
            result[name] = True
    if unknown:
        raise ValueError(f"Unknown config variant(s) {unknown}; valid: {valid}")
    return result


# ------------------------------------------------------------------- run fields
def set_run(
    config: ml_collections.ConfigDict,
    *,
    batch_size: int,
    eval_batch_size: int,
    num_train_steps: int,
    log_every_steps: int,
    eval_every_steps: int,
    checkpoint_every_steps: int,
    keep_checkpoints: int = 3,
    parallel: str = "auto",
    dtype: str = "float32",
) -> ml_collections.ConfigDict:
    """Sets the batch sizes, step counts and cadences (``eval_every_steps=0``: at the
    end only), and the shared tail: ``keep_checkpoints``, ``seed=0``, ``parallel``
    (``'auto'`` | ``'jit'`` | ``'pmap'`` | ``'shard_map'`` | ``'gspmd'``), ``mesh`` and
    ``partitioning`` (the device mesh and how the state is sharded on it, for
    ``gspmd``: data parallel by default; see docs/scaling.md), ``dtype`` and
    ``conv_impl='auto'`` (the CPU-fast convolution on CPU hosts, XLA's own on GPU/TPU).
    Returns ``config``."""
    config.batch_size = batch_size
    config.eval_batch_size = eval_batch_size
    config.num_train_steps = num_train_steps
    config.log_every_steps = log_every_steps
    config.eval_every_steps = eval_every_steps
    config.checkpoint_every_steps = checkpoint_every_steps
    config.keep_checkpoints = keep_checkpoints
    config.seed = 0
    config.parallel = parallel
    config.mesh = (("data", -1), ("fsdp", 1))  # -1: every device the other axes leave
    # "replicate", "fsdp", or ((path regex, spec), ...) rules: see docs/scaling.md.
    config.partitioning = ml_collections.FieldReference("replicate", field_type=object)
    config.dtype = dtype
    config.conv_impl = "auto"
    return config


def shrink(
    config: ml_collections.ConfigDict,
    num_train_steps: int,
    *,
    batch_size: int | None = None,
    eval_batch_size: int | None = None,
    log_every_steps: int = 1,
    eval_every_steps: int | None = None,
    checkpoint_every_steps: int | None = None,
) -> ml_collections.ConfigDict:
    """A smoke run's schedule: ``num_train_steps`` steps, evaluated and checkpointed at
    the last one (unless the cadences are given), no learning rate warmup; batch sizes
    change only where given. Returns ``config``."""
    if batch_size is not None:
        config.batch_size = batch_size
    if eval_batch_size is not None:
        config.eval_batch_size = eval_batch_size
    config.num_train_steps = num_train_steps
    config.log_every_steps = log_every_steps
    config.eval_every_steps = num_train_steps if eval_every_steps is None else eval_every_steps
    config.checkpoint_every_steps = checkpoint_every_steps or num_train_steps
    if "warmup_steps" in config.optimizer:
        config.optimizer.warmup_steps = 0
    return config


# -------------------------------------------------------------------- optimizers
def adam(
    learning_rate: float,
    *,
    warmup_steps: int,
    weight_decay: float = 0.0,
    grad_clip_norm: float | None = None,
) -> ml_collections.ConfigDict:
    """Adam (AdamW when ``weight_decay`` > 0) with a cosine decay after the warmup."""
    return ml_collections.ConfigDict(
        {
            "name": "adam",
            "learning_rate": learning_rate,
            "schedule": "cosine",
            "warmup_steps": warmup_steps,
            "weight_decay": weight_decay,
            "grad_clip_norm": grad_clip_norm,
        }
    )


def momentum(
    learning_rate: float,
    *,
    schedule: str,
    weight_decay: float,
    warmup_steps: int = 0,
    decay_boundaries: tuple[float, ...] | None = None,
) -> ml_collections.ConfigDict:
    """SGD with momentum 0.9; ``decay_boundaries`` (fractions of the run) divide the
    learning rate by 10 under ``schedule='step'``."""
    optimizer = ml_collections.ConfigDict(
        {
            "name": "momentum",
            "learning_rate": learning_rate,
            "momentum": 0.9,
            "schedule": schedule,
            "warmup_steps": warmup_steps,
            "weight_decay": weight_decay,
        }
    )
    if decay_boundaries is not None:
        optimizer.decay_boundaries = decay_boundaries
        optimizer.decay_factor = 0.1
    return optimizer


# -------------------------------------------------------------------- evaluators
def evals(**named: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """``config.evals``: ``eval`` (type ``task``: the task's eval sums on
    ``dataset.eval_split`` every ``eval_every_steps``: loss, accuracy, top-5 for a
    classifier) and the ``named`` evaluators (see :mod:`convjax.evals`)."""
    return ml_collections.ConfigDict({"eval": {"type": "task"}, **named})


# ---------------------------------------------------------------------- datasets
def _data_config() -> ModuleType:
    """``convjax.data.config``, imported on first use (``convjax.data`` loads TensorFlow)."""
    from convjax.data import config

    return config


def cifar10_dataset() -> ml_collections.ConfigDict:
    """tfds ``cifar10`` (32x32x3), per-channel normalisation, flips and 4-pixel crops."""
    dataset = _data_config().default_dataset_config()
    dataset.name = "cifar10"
    dataset.mean = CIFAR_MEAN
    dataset.std = CIFAR_STD
    dataset.augment = CIFAR_AUGMENT
    return dataset


def shapes_dataset(name: str, max_objects: int) -> ml_collections.ConfigDict:
    """The offline ``shapes`` scenes (``shapes/scenes``, ``shapes/single``, their
    ``_small`` versions): 64x64x3, mirrored with their landmarks, normalised."""
    from convjax.data.shapes import LANDMARK_FLIP_PERMUTATION

    dataset = _data_config().default_dataset_config()
    dataset.name = name
    dataset.max_objects = max_objects
    dataset.augment = "mirror"
    dataset.landmark_flip_permutation = LANDMARK_FLIP_PERMUTATION
    dataset.mean = (0.5, 0.5, 0.5)
    dataset.std = (0.25, 0.25, 0.25)
    return dataset


# ------------------------------------------------------------------ family bases
def classification(
    model: str,
    model_kwargs: Mapping[str, Any],
    dataset: ml_collections.ConfigDict,
    optimizer: ml_collections.ConfigDict,
    *,
    label_smoothing: float = 0.0,
) -> ml_collections.ConfigDict:
    """A classifier's config without run fields: ``model``, ``dataset``, the
    ``classification`` task (top-5 accuracy too) and ``optimizer``."""
    config = ml_collections.ConfigDict()
    config.model = model
    config.model_kwargs = ml_collections.ConfigDict(dict(model_kwargs))
    config.dataset = dataset
    config.task = "classification"
    config.task_kwargs = ml_collections.ConfigDict(
        {"label_smoothing": label_smoothing, "topk": (5,)}
    )
    config.optimizer = optimizer
    config.evals = evals()
    return config


def imagenet_classification(
    model: str,
    imagenette: bool,
    *,
    batch_size: int,
    epochs: int,
    optimizer: ml_collections.ConfigDict,
    model_kwargs: Mapping[str, Any] | None = None,
    **dataset_kwargs: Any,
) -> ml_collections.ConfigDict:
    """The ImageNet family (resnet/vgg/alexnet/googlenet ``_imagenet``): 1000 classes on
    ``imagenet2012`` or 10 on Imagenette (40 epochs); ``epochs`` of ``batch_size``,
    evaluated 10 times, checkpointed every 1,000 steps, bfloat16. ``dataset_kwargs`` go
    to :func:`convjax.data.config.imagenet_dataset`."""
    kwargs = {"num_classes": 10 if imagenette else 1000, **(model_kwargs or {})}
    dataset = _data_config().imagenet_dataset(imagenette, **dataset_kwargs)
    config = classification(model, kwargs, dataset, optimizer)
    epochs = 40 if imagenette else epochs
    num_train_steps = epochs * (IMAGENETTE_TRAIN if imagenette else IMAGENET_TRAIN) // batch_size
    return set_run(
        config, batch_size=batch_size, eval_batch_size=500, num_train_steps=num_train_steps,
        log_every_steps=100, eval_every_steps=num_train_steps // 10,
        checkpoint_every_steps=1_000, dtype="bfloat16",
    )  # fmt: skip


def imagenet_momentum(
    learning_rate: float, imagenette: bool, *, weight_decay: float, warmup_steps: int = 0
) -> ml_collections.ConfigDict:
    """SGD momentum divided by 10 at 1/3 and 2/3 of the run (cosine on Imagenette)."""
    return momentum(
        learning_rate, schedule="cosine" if imagenette else "step", weight_decay=weight_decay,
        warmup_steps=warmup_steps, decay_boundaries=(1 / 3, 2 / 3),
    )  # fmt: skip


def digits_smoke(
    config: ml_collections.ConfigDict,
    num_train_steps: int,
    *,
    image_size: int = 32,
    channels: int = 1,
    eval_every_steps: int | None = None,
) -> ml_collections.ConfigDict:
    """A classifier's ``:smoke`` variant: the offline digits (10 classes) at
    ``image_size`` with ``channels``, batches of 8 (120 to evaluate), float32."""
    config.model_kwargs.num_classes = 10
    config.dataset = _data_config().digits_dataset(image_size, channels=channels)
    config.dtype = "float32"
    return shrink(
        config, num_train_steps, batch_size=8, eval_batch_size=120,
        eval_every_steps=eval_every_steps,
    )  # fmt: skip


def yolo(
    *,
    num_classes: int,
    anchors: tuple[tuple[float, float], ...],
    widths: tuple[int, ...],
    pools: int,
    head_width: int,
    dataset: ml_collections.ConfigDict,
    max_detections: int,
    optimizer: ml_collections.ConfigDict,
) -> ml_collections.ConfigDict:
    """The YOLOv2 family (yolo_shapes, yolo_voc, yolo_coco) without run fields: a
    Darknet-style backbone (``widths``, the first ``pools`` stages end in a max pool), the
    ``detection`` task (lambda_coord 5, lambda_noobj 0.5, NMS at IoU 0.45), evaluated by
    its loss terms (``eval``) and by VOC mAP@0.5 and COCO AP (``map``)."""
    config = ml_collections.ConfigDict()
    config.model = "yolo"
    config.model_kwargs = ml_collections.ConfigDict(
        {
            "num_classes": num_classes,
            "version": "v2",
            "num_anchors": len(anchors),
            "widths": widths,
            "pools": pools,
            "head_width": head_width,
        }
    )
    config.dataset = dataset
    config.task = "detection"
    config.task_kwargs = ml_collections.ConfigDict(
        {
            "version": "v2",
            "anchors": anchors,
            "lambda_coord": 5.0,
            "lambda_noobj": 0.5,
            "nms_iou_threshold": 0.45,
            "max_detections": max_detections,
        }
    )
    config.optimizer = optimizer
    config.evals = evals(map={"type": "detection"})
    return config
