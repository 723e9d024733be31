"""Building or downloading tfds datasets ahead of training (``experiments/prepare_data.py``).

Offline convjax datasets (``sklearn_digits``, ``skimage_images``, ``lfw_subset``, and the
procedural ``shapes`` / ``identities``) are built from installed packages. Hub datasets
(``mnist``, ``cifar10``, ``imagenette``, ``voc``, ``coco``, ``lfw``, ...) are downloaded by
tfds. A few (``imagenet2012``, ...) cannot be downloaded by tfds: fetch their archives
yourself as the dataset's instructions say, put them in the *manual directory* (by
default ``<data_dir>/downloads/manual``, or pass ``manual_dir``), and run this again.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import tensorflow_datasets as tfds

from convjax.data.builders import get_builder, is_prepared
from convjax.data.config import resolve_dataset_config


@dataclasses.dataclass(frozen=True)
class PreparedDataset:
    name: str
    path: str
    splits: dict[str, int]  # split name -> number of examples


def _manual_dir(builder: tfds.core.DatasetBuilder, manual_dir: str | None) -> str:
    return manual_dir or os.path.join(str(builder.data_dir_root), "downloads", "manual")


def prepare_dataset(
    name: str, *, data_dir: str | None = None, manual_dir: str | None = None
) -> PreparedDataset:
    """Builds (or downloads) ``name`` into ``data_dir`` unless it is already there.

    Raises:
      ValueError: unknown name (lists the offline ones), or a dataset that needs a
        manual download whose manual directory is empty (says what to put where).
    """
    config = resolve_dataset_config({"name": name, "data_dir": data_dir, "manual_dir": manual_dir})
    builder = get_builder(config, prepare=False)
    if not is_prepared(builder):
        instructions = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
        where = _manual_dir(builder, manual_dir)
        if instructions and not (os.path.isdir(where) and os.listdir(where)):
            raise ValueError(
                f"{name} needs a manual download: tfds cannot fetch it. Put the files in "
                f"{where} (or pass --manual_dir) and run again. Instructions from tfds:\n"
                f"{instructions.strip()}"
            )
        builder = get_builder(config)
    splits = {split: info.num_examples for split, info in builder.info.splits.items()}
    return PreparedDataset(name=name, path=str(builder.data_dir), splits=splits)


def prepare_datasets(
    names: Sequence[str], *, data_dir: str | None = None, manual_dir: str | None = None
) -> list[PreparedDataset]:
    """:func:`prepare_dataset` for each name, in order."""
    return [prepare_dataset(n, data_dir=data_dir, manual_dir=manual_dir) for n in names]
