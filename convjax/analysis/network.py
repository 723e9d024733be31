"""The network being looked at: a model, its variables and the data to look with."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import ml_collections
import numpy as np

from convjax.data.config import IMAGENET_MEAN, IMAGENET_STD, resolve_dataset_config

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Network:
    """A model with its weights and the data to look at it with.

    ``dataset``: a resolved dataset config; its mean/std undo the normalisation for
    display, and its eval split is mined unless ``images`` are given.
    ``image_shape``: the model's input ``(H, W, C)`` (from the trained workdir or the
    zoo dataset config: the dataset need not be on disk).
    ``images``: model inputs ``float32 [N, H, W, C]`` to look with instead of the eval
    split (e.g. image files through the eval preprocessing), or ``None``.
    """

    model: nn.Module
    variables: PyTree
    dataset: ml_collections.ConfigDict
    description: str
    image_shape: tuple[int, int, int]
    images: np.ndarray | None = None

    def __post_init__(self):
        if self.images is not None and tuple(self.images.shape[1:]) != tuple(self.image_shape):
            raise ValueError(
                f"images of shape {tuple(self.images.shape[1:])} do not fit the model's "
                f"input {tuple(self.image_shape)}"
            )


def zoo_dataset(name: str = "skimage_images", image_size: int = 224, channels: int = 3):
    """The data for a zoo model: ``name``'s first split at ``image_size``, ImageNet
    normalisation (what torchvision weights expect). Default: the photographs that
    ship with scikit-image (offline)."""
    dataset = resolve_dataset_config({"name": name})
    dataset.eval_split = "train" if name == "skimage_images" else dataset.eval_split
    dataset.image_size = (image_size, image_size)
    dataset.resize_mode = "center_crop"
    dataset.channels = channels
    dataset.mean = IMAGENET_MEAN[:channels] if channels == 3 else (0.5,)
    dataset.std = IMAGENET_STD[:channels] if channels == 3 else (0.5,)
    return dataset
