"""Orbax checkpoints of a :class:`~convjax.train.state.TrainState`.

Checkpoints hold the state's arrays: host (numpy) copies, or the sharded
``jax.Array``s of a sharded state as they are (each process writes the shards it
holds). Either restores on any device count, mesh and strategy: a restore target
whose leaves are ``jax.ShapeDtypeStruct``s with a ``sharding`` is read straight into
arrays of that layout (each process reads what its devices hold), any other target
into numpy arrays. Orbax writes each step to a temporary directory and renames it
when complete: a run killed mid-save leaves the previous checkpoint intact, and
an unfinished one is never restored. Nothing is loaded through pickle.

A checkpoint that cannot be read (a truncated array file, a damaged ``manifest.ocdbt``
or ``_METADATA``, a missing ``_METADATA``, an empty step directory) is never deleted:
:meth:`Checkpointer.restore` moves it to ``<checkpoints>/corrupt/<step>-<reason>``,
prints one line naming the step and the reason, and falls back to the newest
readable checkpoint.

A reader (``Checkpointer(directory, read_only=True)``: evaluation, detection, any
script that uses a finished or running workdir) never modifies the directory: it
creates nothing, cleans no unfinished save of a run that is writing, moves nothing
aside, and takes no lock. It reads only complete steps (orbax renames a step into
place when its save is done); a step that the writing run prunes while it is being
read is skipped.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import sys
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from convjax.checkpoint_layout import CORRUPT_DIR, error_summary, step_problem
from convjax.train.partitioning import path_name

PyTree = Any
READER_ATTEMPTS = 5  # a reader lists the steps again when a run pruned all it listed


class CorruptCheckpointError(ValueError):
    """A checkpoint step that exists on disk but cannot be read."""


@dataclasses.dataclass(frozen=True)
class SetAside:
    """An unreadable checkpoint that :meth:`Checkpointer.restore` moved out of the way."""

    step: int
    reason: str
    moved_to: str | None  # None on hosts other than the first, which do not move files


def check_keep(keep: int | None) -> int | None:
    """Validates the ``keep_checkpoints`` config field: an integer >= 1, or None (keep all)."""
    if keep is None:
        return None
    if isinstance(keep, bool) or not isinstance(keep, numbers.Integral) or keep < 1:
        raise ValueError(
            f"keep_checkpoints must be an integer >= 1 (how many of the newest checkpoints "
            f"to keep) or None (keep all); got {keep!r}"
        )
    return int(keep)


class CheckpointMismatchError(ValueError):
    """A readable checkpoint whose arrays differ in names or shapes from the restore target."""


def _tree_diff(saved: PyTree, target: PyTree, limit: int = 4) -> str:
    """A short description of the arrays that differ (names missing on a side, shapes)."""
    have = {path_name(p): np.shape(x) for p, x in jax.tree_util.tree_flatten_with_path(saved)[0]}
    want = {path_name(p): np.shape(x) for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
    lines = [f"{k} not in the checkpoint" for k in want if k not in have]
    lines += [f"{k} only in the checkpoint" for k in have if k not in want]
    lines += [
        f"{k} saved {list(have[k])}, expected {list(want[k])}"
        for k in want
        if k in have and have[k] != want[k]
    ]
    more = f" (and {len(lines) - limit} more)" if len(lines) > limit else ""
    return "; ".join(lines[:limit]) + more


class _Unreadable(Exception):
    def __init__(self, slug: str, reason: str):
        super().__init__(reason)
        self.slug, self.reason = slug, reason


def _is_sharded_target(leaf: Any) -> bool:
    return isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is not None


def _zero_view(leaf: Any) -> np.ndarray | jax.ShapeDtypeStruct:
    """A read-only zero view with the shape and dtype of an array, a
    ``jax.ShapeDtypeStruct`` or a scalar: the restore target, nothing allocated. A
    ``jax.ShapeDtypeStruct`` with a sharding is kept: it is restored in that layout."""
    if _is_sharded_target(leaf):
        return leaf
    if not hasattr(leaf, "dtype"):
        leaf = np.asarray(leaf)
    return np.broadcast_to(np.zeros((), leaf.dtype), leaf.shape)


class Checkpointer:
    """Saves every ``N`` steps (the caller decides), keeps the newest ``keep``.

    ``keep`` is the config's ``keep_checkpoints``: an integer >= 1, or ``None`` to keep
    every checkpoint. ``set_aside`` lists the unreadable checkpoints that
    :meth:`restore` moved out of the way. ``read_only=True`` opens it as a reader
    (module docstring): nothing is written, cleaned, pruned or moved, and
    :meth:`save` is refused.
    """

    def __init__(
        self,
        directory: str,
        *,
        keep: int | None = 3,
        async_save: bool = True,
        read_only: bool = False,
    ):
        keep = check_keep(keep)
        self.directory = os.path.abspath(directory)
        self.read_only = read_only
        self.set_aside: list[SetAside] = []
        # Orbax's own read_only option logs a warning per option it overrides; these
        # options are what a reader needs: no directory made, no unfinished save of a
        # running job cleaned, nothing pruned, no metadata written.
        self.options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else keep,
            create=not read_only,
            enable_async_checkpointing=async_save and not read_only,
            cleanup_tmp_directories=not read_only,
            save_root_metadata=not read_only,
        )
        if not read_only and jax.process_index() == 0:
            self._set_aside_links()
        self.manager = self._listed(
            lambda: ocp.CheckpointManager(self.directory, options=self.options)
        )

    def _set_aside_links(self) -> None:
        """Moves a step that is a symbolic link (the link, not what it points to) to
        ``corrupt/<step>-link``: pruning it would delete files outside the workdir, or
        fail (orbax never removes a link)."""
        if not os.path.isdir(self.directory):
            return
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name)
            if name.isdigit() and os.path.islink(path):
                moved_to = self._corrupt_path(int(name), "link")
                os.rename(path, moved_to)
                print(
                    f"Checkpoint step {name} is a symbolic link (to {os.readlink(moved_to)}); "
                    f"moved the link to {moved_to}: a run saves, prunes and restores only "
                    "the checkpoints inside its workdir.",
                    file=sys.stderr,
                    flush=True,
                )

    def _corrupt_path(self, step: int, slug: str) -> str:
        """A new ``corrupt/<step>-<slug>[.n]`` path (the folder is made, never a link)."""
        folder = os.path.join(self.directory, CORRUPT_DIR)
        if os.path.islink(folder):
            raise ValueError(
                f"{folder} is a symbolic link; a run moves unreadable checkpoints only "
                "inside its workdir: remove the link and run again"
            )
        os.makedirs(folder, exist_ok=True)
        base = os.path.join(folder, f"{step}-{slug}")
        moved_to, n = base, 1
        while os.path.lexists(moved_to):
            n += 1
            moved_to = f"{base}.{n}"
        return moved_to

    def _listed(self, list_steps: Callable[[], Any]) -> Any:
        """``list_steps()`` (which lists the step directories); a reader lists again when
        the writing run pruned a step between orbax's listing and its reading of it."""
        for attempt in range(READER_ATTEMPTS):
            try:
                return list_steps()
            except (FileNotFoundError, NotADirectoryError):  # orbax's two words for "gone"
                if not self.read_only or attempt == READER_ATTEMPTS - 1:
                    raise
        return None

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, items: PyTree, *, force: bool = False) -> None:
        """Saves ``items`` (a pytree of host arrays, or of ``jax.Array``s: each process
        writes its shards) as ``step``; asynchronous once the arrays are copied to the
        host, so the caller may donate them to the next step."""
        if self.read_only:
            raise RuntimeError(f"{self.directory} was opened read-only; it cannot save")
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.StandardSave(items), force=force)

    def restore(self, target: PyTree, step: int | None = None) -> PyTree | None:
        """Restores ``step`` (default: the newest readable one) shaped like ``target``
        (a pytree of arrays or ``jax.ShapeDtypeStruct``).

        Returns numpy arrays (``jax.Array``s laid out as the target's leaves that are
        ``jax.ShapeDtypeStruct``s with a ``sharding``), or ``None`` when there is no
        readable checkpoint. Without ``step``, an unreadable checkpoint is moved to
        ``corrupt/<step>-<reason>`` (one line on stderr says which step and why) and the
        next older one is tried. An
        explicit ``step`` that cannot be read raises :class:`CorruptCheckpointError`.
        A reader leaves an unreadable step in place (one line says so) and skips a step
        that the writing run pruned while it was being read.
        A readable checkpoint whose array names or shapes differ from ``target`` raises
        :class:`CheckpointMismatchError` listing them (nothing is moved).
        """
        abstract = jax.tree.map(_zero_view, target)
        for _ in range(READER_ATTEMPTS if self.read_only else 1):
            available = sorted(self.manager.all_steps(), reverse=True)
            if step is not None and step not in available:
                raise ValueError(
                    f"no checkpoint step {step} in {self.directory}; available: {available[::-1]}"
                )
            pruned = False
            for candidate in available if step is None else [step]:
                try:
                    return self._restore_step(candidate, abstract)
                except _Unreadable as bad:
                    if step is not None:
                        raise CorruptCheckpointError(
                            f"checkpoint step {step} in {self.directory} cannot be read: "
                            f"{bad.reason}"
                        ) from None
                    if not self.read_only:
                        self._set_aside(candidate, bad.slug, bad.reason)
                    elif not self._skip(candidate, bad.reason):
                        pruned = True
            if not pruned:
                return None
            self._listed(self.manager.reload)  # the writing run pruned what was listed
        return None

    def _skip(self, step: int, reason: str) -> bool:
        """A reader's answer to an unreadable step: says so and returns True, or returns
        False when the step is gone (pruned by the run that writes)."""
        if not os.path.isdir(self._step_dir(step)):
            return False
        print(
            f"Checkpoint step {step} is unreadable ({reason}); left in place (read-only); "
            "trying the previous checkpoint.",
            file=sys.stderr,
            flush=True,
        )
        return True

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _check_files(self, step: int) -> None:
        """Raises :class:`_Unreadable` for damage visible without reading the arrays."""
        problem = step_problem(self._step_dir(step))
        if problem is not None:
            raise _Unreadable(*problem)

    def _restore_step(self, step: int, abstract: PyTree) -> PyTree:
        self._check_files(step)
        try:
            restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as error:
            try:  # Unreadable files, or files that do not match the target?
                saved = self.manager.restore(step, args=ocp.args.StandardRestore())
            except Exception as read_error:  # noqa: BLE001 -- any failure to read
                reason = error_summary(read_error, self._step_dir(step))
                raise _Unreadable("unreadable", reason) from None
            self._check_matches(step, saved, abstract, error)
            raise
        restored = jax.tree.map(
            lambda x, want: x if _is_sharded_target(want) else np.asarray(x), restored, abstract
        )
        self._check_matches(step, restored, abstract)
        return restored

    def _check_matches(
        self, step: int, saved: PyTree, target: PyTree, cause: BaseException | None = None
    ) -> None:
        diff = _tree_diff(saved, target)
        if diff:
            raise CheckpointMismatchError(
                f"checkpoint step {step} in {self.directory} does not match the state being "
                f"restored (a different model or optimizer?): {diff}"
            ) from cause

    def _set_aside(self, step: int, slug: str, reason: str) -> None:
        """Moves ``step`` to ``corrupt/<step>-<slug>`` (first host only) and says so."""
        moved_to = None
        if jax.process_index() == 0:
            moved_to = self._corrupt_path(step, slug)
            try:
                os.rename(self._step_dir(step), moved_to)
            except FileNotFoundError:
                moved_to = None  # another process moved it first
        self._listed(self.manager.reload)
        self.set_aside.append(SetAside(step, reason, moved_to))
        where = f"moved to {moved_to}" if moved_to else "left in place"
        print(
            f"Checkpoint step {step} is unreadable ({reason}); {where}; "
            "trying the previous checkpoint.",
            file=sys.stderr,
            flush=True,
        )

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
