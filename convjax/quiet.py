"""Quiet start-up for the command-line scripts: a user sees their run, not library chatter.

A script calls :func:`quiet_startup` first, before TensorFlow or JAX is imported (it
only sets environment defaults), and :func:`quiet_logging` in ``main`` once absl has
parsed the flags. What is left on the terminal is the script's own lines (what is
built, progress, results) and the warnings and errors that matter, printed as
``warning: ...`` without absl's ``W1130 12:52:35.185288 139730 file.py:394]`` prefix.
An explicit ``--verbosity`` (``--verbosity=0`` for INFO) keeps absl's logging as it is.

What it silences, and why:

- TensorFlow's C++ logs below ERROR (``TF_CPP_MIN_LOG_LEVEL=2``): the CPU-feature
  banner and tf.data INFO lines. convjax uses TensorFlow only for its input pipeline.
- TensorFlow's "oneDNN custom operations are on" line, printed twice with absl's "All
  log messages before absl::InitializeLog() is called" (``TF_ENABLE_ONEDNN_OPTS=0``;
  ``TF_CPP_MIN_LOG_LEVEL`` alone does not hide it).
- Python INFO logs of JAX, orbax and tfds (absl verbosity WARNING): JAX's "Unable to
  initialize backend 'tpu'", orbax's checkpoint-manager lines, tfds' reader lines.
- tfds' "Variant folder ... has no dataset_info.json", logged while a dataset is first
  built (:data:`NOISE`).

Every variable is a default: one set in the environment wins. This module imports
neither JAX nor TensorFlow.
"""

from __future__ import annotations

import logging
import os

ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}
# Format strings of library log records that tell a user nothing (matched exactly).
NOISE = ("Variant folder %s has no %s",)


def quiet_startup() -> None:
    """Sets :data:`ENVIRONMENT`'s defaults; call before TensorFlow or JAX is imported."""
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)


class PlainFormatter(logging.Formatter):
    """``message`` for INFO and below, ``warning: message`` / ``error: message`` above."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


class DropNoise(logging.Filter):
    """Drops the records whose format string is in :data:`NOISE`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg in NOISE)


def quiet_logging() -> None:
    """absl logging at WARNING in the plain format, without :data:`NOISE`; nothing
    changes when the command line gave ``--verbosity``. Call in ``main`` (after absl
    parsed the flags). Idempotent."""
    from absl import flags
    from absl import logging as absl_logging

    if flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present:
        return
    absl_logging.set_verbosity(absl_logging.WARNING)
    absl_logging.get_absl_handler().setFormatter(PlainFormatter())
    absl_logger = absl_logging.get_absl_logger()
    if not any(isinstance(f, DropNoise) for f in absl_logger.filters):
        absl_logger.addFilter(DropNoise())
