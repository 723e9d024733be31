"""Finding and preparing tfds builders by name, with a clear error for unknown names."""

from __future__ import annotations

import contextlib
import difflib
import glob
import importlib
import io
import os
import pkgutil
import shutil
import time
from collections.abc import Iterator

import ml_collections
import tensorflow_datasets as tfds
from absl import logging

from convjax.quiet import DropNoise


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
    if prepare and not is_prepared(builder):
        download_config = tfds.download.DownloadConfig(manual_dir=config.get("manual_dir"))
        if is_offline_builder(builder):
            build_offline(builder, download_config)
        else:
            builder.download_and_prepare(download_config=download_config)
    return builder


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
    """``builder.is_prepared()`` without tfds' "Variant folder ... has no dataset_info.json"
    warning, which only says that the dataset is not built yet."""
    drop = DropNoise()
    absl_logger = logging.get_absl_logger()
    absl_logger.addFilter(drop)
    try:
        return builder.is_prepared()
    finally:
        absl_logger.removeFilter(drop)


def is_offline_builder(builder: tfds.core.DatasetBuilder) -> bool:
    """Whether ``builder`` is one of convjax's offline builders (built, not downloaded)."""
    return type(builder).__module__.startswith("convjax.")


@contextlib.contextmanager
def _quiet_tfds() -> Iterator[None]:
    """No tfds progress bars, prints or log records below ERROR inside the block."""
    utils = tfds.core.utils.tqdm_utils
    bars = utils._active  # noqa: SLF001 -- tfds has a setter for it but no getter.
    absl_logger = logging.get_absl_logger()
    level = absl_logger.level
    tfds.display_progress_bar(False)
    absl_logger.setLevel(max(level, logging.ERROR))  # e.g. "Variant folder ... has no ..."
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # "Downloading and preparing ..."
            yield
    finally:
        absl_logger.setLevel(level)
        tfds.display_progress_bar(bars)


class BuildInterrupted(Exception):
    """Ctrl-C during a dataset build (scripts exit with ``exit_code``, 128 + SIGINT)."""

    exit_code = 130


def _remove_partial_build(data_dir: str) -> None:
    """Removes what an interrupted build of ``data_dir`` (``<root>/<name>/<version>``)
    left: tfds' ``*.incomplete*`` folders beside it, and the folders it made empty."""
    parent = os.path.dirname(data_dir)
    for partial in glob.glob(f"{glob.escape(data_dir)}.incomplete*"):
        shutil.rmtree(partial, ignore_errors=True)
    for folder in (data_dir, parent):
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only when empty


def build_offline(
    builder: tfds.core.DatasetBuilder, download_config: tfds.download.DownloadConfig
) -> None:
    """Builds an offline dataset with one line of output of its own.

    tfds would announce a download of "Unknown size", a missing ``dataset_info.json``
    and progress bars (escape codes in a log file); nothing is downloaded, so the line
    says what is built, where, and how many examples it holds::

      Building offline dataset sklearn_digits in DIR/sklearn_digits/1.0.0 ... 1,797
      examples (train 1,438, test 359) in 3.1 s
    """
    name = builder.name + (f"/{builder.builder_config.name}" if builder.builder_config else "")
    print(f"Building offline dataset {name} in {builder.data_dir} ...", end="", flush=True)
    start = time.perf_counter()
    try:
        with _quiet_tfds():
            builder.download_and_prepare(download_config=download_config)
    except KeyboardInterrupt:
        print(" interrupted", flush=True)
        _remove_partial_build(str(builder.data_dir))
        raise BuildInterrupted(
            f"Interrupted (SIGINT) while building {name}: the partial build was removed; "
            "run the same command to build it again."
        ) from None
    except BaseException:
        print(" failed", flush=True)
        raise
    splits = {name: info.num_examples for name, info in builder.info.splits.items()}
    order = {"train": 0, "validation": 1, "test": 2}
    parts = ", ".join(
        f"{name} {n:,}" for name, n in sorted(splits.items(), key=lambda s: order.get(s[0], 3))
    )
    print(
        f" {sum(splits.values()):,} examples ({parts}) in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
