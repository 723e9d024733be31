"""Orbax checkpoints of a :class:`~convjax.train.state.TrainState`.

Checkpoints hold host (numpy) copies of the state, so they restore on any device
count and strategy. Orbax writes each step to a temporary directory and renames it
when complete: a run killed mid-save leaves the previous checkpoint intact, and
an unfinished one is never restored. Nothing is loaded through pickle.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any


class Checkpointer:
    """Saves every ``N`` steps (the caller decides), keeps the newest ``keep``."""

    def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=True,
                enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True,
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, items: PyTree, *, force: bool = False) -> None:
        """Saves ``items`` (a pytree of host arrays) as ``step``; asynchronous."""
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.StandardSave(items), force=force)

    def restore(self, target: PyTree, step: int | None = None) -> PyTree | None:
        """Restores ``step`` (default: latest) shaped like ``target`` as numpy arrays.

        Returns ``None`` when there is no checkpoint yet.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        abstract = jax.tree.map(lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), target)
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return jax.tree.map(np.asarray, restored)

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
