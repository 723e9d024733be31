"""Model inputs for image files: the eval split's preprocessing at the trained input size.

:func:`model_inputs` is what detection (:mod:`convjax.runs.detect`) and the faces
verbs (:mod:`convjax.runs.faces`) feed a restored model: each image goes through
:func:`convjax.data.pipeline.preprocess_images`: the example function and the eval
chain (``dataset.pp_eval``, e.g. ImageNet's resize-shorter-side-256 + centre-crop-224 +
normalisation), exactly as the eval split. A dataset described by fields rather than
chains that keeps its stored size (``image_size=None``) or channels (``channels=None``)
is pinned to the size and channels of its examples, so an image of any size or colour
mode reaches the model at the shape it was trained on; an image already of that shape
is left as the eval split leaves it.
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections
import numpy as np

from convjax.data import pipeline
from convjax.data import spec as data_spec
from convjax.data.config import resolve_dataset_config
from convjax.runs.images import read_image


def inference_dataset_config(dataset: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of ``dataset`` with ``image_size`` and ``channels`` set to its examples'
    preprocessed shape where they were ``None`` (module docstring)."""
    config = resolve_dataset_config(dataset)
    if data_spec.resolve(config).explicit_chains:
        return config  # The eval chain fixes the shape itself.
    if config.image_size is None or config.channels is None:
        height, width, channels = pipeline.dataset_metadata(config).image_shape
        if config.image_size is None:
            config.image_size = (height, width)
        if config.channels is None:
            config.channels = channels
    return config


def model_inputs(
    images: Sequence[str | np.ndarray], dataset: ml_collections.ConfigDict
) -> np.ndarray:
    """Image files (paths or ``skimage:<name>``) or decoded images ``[h, w, c]`` (uint8,
    or float in 0..1) -> float32 ``[B, H, W, C]`` model inputs."""
    decoded = [read_image(image) if isinstance(image, str) else image for image in images]
    return pipeline.preprocess_images(decoded, inference_dataset_config(dataset))
