"""Where a convjax run keeps its checkpoints, what each one holds, and reading one back.

The one owner of the layout, so that the training run (:mod:`convjax.train.checkpointing`,
:mod:`convjax.runs.workdir`) and the weight loader (:mod:`convjax.models.pretrained`)
speak of the same folders and items. It imports no convjax folder, so every layer
may read through it.

- ``<workdir>/checkpoints/<step>/``: one orbax checkpoint per step, each holding the
  items :data:`ITEMS` (:meth:`convjax.train.state.TrainState.checkpoint_items`);
- ``<workdir>/checkpoints/corrupt/<step>-<reason>``: where the training run's
  :class:`~convjax.train.checkpointing.Checkpointer` moves a step it cannot read.

:func:`read_newest` reads a checkpoint without a restore target (any model's weights,
whatever head it has), falling back like the Checkpointer: an unreadable step is
named on stderr and the previous one is read. As a reader it never moves, deletes or
writes anything.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"  # inside a workdir
CORRUPT_DIR = "corrupt"  # inside the checkpoint folder, outside orbax's view
ITEMS = ("step", "params", "model_state", "opt_state", "rng")  # what every step holds
PARAMS, MODEL_STATE = "params", "model_state"


def checkpoint_directory(path: str | os.PathLike) -> str:
    """A workdir (its :data:`CHECKPOINT_DIR` is used) or a checkpoint folder -> the
    absolute checkpoint folder."""
    path = os.path.abspath(os.fspath(path))
    inside = os.path.join(path, CHECKPOINT_DIR)
    return inside if os.path.isdir(inside) else path


def step_problem(step_dir: str) -> tuple[str, str] | None:
    """``(slug, reason)`` for damage visible without reading the arrays (an empty step
    directory, a missing or unparsable ``_METADATA``); ``None`` when the files look whole."""
    try:
        names = os.listdir(step_dir)
    except FileNotFoundError:  # pruned by the run that writes, since it was listed
        return "gone", "removed while it was being read"
    if not names:
        return "empty", "empty step directory"
    metadata = glob.glob(os.path.join(step_dir, "*", "_METADATA"))
    if not metadata:
        return "missing-metadata", "missing _METADATA (the tree of saved arrays)"
    for file in metadata:
        try:
            with open(file, "rb") as f:
                json.load(f)
        except (OSError, ValueError) as error:
            where = os.path.relpath(file, step_dir)
            return "bad-metadata", f"{where} is not valid JSON: {error}"
    return None


def error_summary(error: BaseException, step_dir: str, limit: int = 240) -> str:
    """One line: the error's type and message, paths relative to the step directory, and
    when too long its start (the status) and its end (the innermost cause)."""
    text = str(error).split(" [tensorstore_spec=")[0]
    text = " ".join(text.split()).replace(step_dir + os.sep, "")
    line = f"{type(error).__name__}: {text}"
    if len(line) <= limit:
        return line
    head = line[: line.index(":", len(type(error).__name__) + 2) + 1]
    return f"{head} ... {line[-(limit - len(head) - 5) :]}"


def _say_on_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_newest(
    directory: str | os.PathLike,
    step: int | None = None,
    *,
    announce: Callable[[str], None] = _say_on_stderr,
) -> tuple[int, dict[str, Any]]:
    """``(step, items)`` of checkpoint ``step`` (default: the newest readable one) in a
    workdir or checkpoint folder, as saved (numpy arrays, no restore target).

    Without ``step``, an unreadable step is named through ``announce`` and the previous
    one is read. Raises ``ValueError`` (one line) when there is no checkpoint, none is
    readable, or the given ``step`` is missing or unreadable.
    """
    directory = checkpoint_directory(directory)
    if not os.path.isdir(directory):
        raise ValueError(f"No checkpoint directory at {directory!r}")
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    with ocp.CheckpointManager(directory, options=options) as manager:
        available = sorted(manager.all_steps(), reverse=True)
        if step is not None and step not in available:
            raise ValueError(f"no checkpoint step {step} in {directory}; available: {available}")
        for candidate in available if step is None else [step]:
            step_dir = os.path.join(directory, str(candidate))
            problem = step_problem(step_dir)
            if problem is None:
                try:
                    return candidate, manager.restore(candidate, args=ocp.args.StandardRestore())
                except Exception as error:  # noqa: BLE001 -- any failure to read
                    problem = ("unreadable", error_summary(error, step_dir))
            if step is not None:
                raise ValueError(
                    f"checkpoint step {step} in {directory} cannot be read: {problem[1]}"
                )
            reason = problem[1]
            announce(
                f"Checkpoint step {candidate} is unreadable ({reason}); reading the previous one."
            )
    raise ValueError(f"No readable checkpoint in {directory!r}")
