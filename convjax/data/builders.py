"""Finding and preparing tfds builders by name, with a clear error for unknown names."""

from __future__ import annotations

import difflib
import importlib
import pkgutil

import ml_collections
import tensorflow_datasets as tfds
from absl import logging


def _import_data_modules() -> None:
    """Imports every module of convjax.data, so each offline builder is registered."""
    import convjax.data

    for module in pkgutil.iter_modules(convjax.data.__path__):
        try:
            importlib.import_module(f"convjax.data.{module.name}")
        except Exception as error:  # noqa: BLE001 -- listing names must not fail on one module.
            logging.warning("convjax.data.%s failed to import: %s", module.name, error)


def offline_datasets() -> list[str]:
    """tfds names of the datasets convjax builds offline (any module of convjax.data)."""
    _import_data_modules()
    names = set()
    pending = [tfds.core.DatasetBuilder]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("convjax.") and not getattr(cls, "__abstractmethods__", None):
            names.add(cls.name)
    return sorted(names)


def get_builder(
    config: ml_collections.ConfigDict, *, prepare: bool = True
) -> tfds.core.DatasetBuilder:
    """The tfds builder for ``config.name`` in ``config.data_dir``, prepared if needed.

    Preparing a convjax offline dataset builds it from installed packages; preparing a
    hub dataset (mnist, cifar10, ...) downloads it, or reads ``config.manual_dir`` for
    datasets that need a manual download (see ``experiments/prepare_data.py``).

    Raises:
      ValueError: the name is not a tfds dataset; the message lists the offline ones.
    """
    try:
        builder = tfds.builder(config.name, data_dir=config.data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        base = config.name.split("/")[0].split(":")[0]
        close = difflib.get_close_matches(base, tfds.list_builders(with_community_datasets=False))
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(
            f"Unknown dataset {config.name!r}.{hint} convjax's offline datasets: "
            f"{offline_datasets()}; any name in tfds.list_builders() works where tfds can "
            "download or find it."
        ) from error
    if prepare and not builder.is_prepared():
        download_config = tfds.download.DownloadConfig(manual_dir=config.get("manual_dir"))
        builder.download_and_prepare(download_config=download_config)
    return builder
