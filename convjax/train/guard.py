"""The divergence guard: every step's loss is checked, and no diverged state is saved.

:class:`DivergenceGuard` wraps the compiled train step. Each step's ``loss`` stays on
the device (no host sync per step); :meth:`DivergenceGuard.check` fetches the losses
of the steps since the previous check in one go -- the training run calls it at every
log step and before every checkpoint -- and raises :class:`DivergenceError` naming the
first bad step when

- a loss is NaN or infinite, or
- a loss explodes while staying finite: above ``max_loss_factor`` (default 10^6) times
  the median loss of this process's first :data:`EARLY_STEPS` steps (of the steps
  before it, while there are fewer), or above ``max_loss`` when it is set.

:func:`check_state_finite` refuses a host state with a NaN or infinite array, the last
line of defence before a checkpoint is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from convjax.train.step import TrainStep

PyTree = Any
EARLY_STEPS = 20  # the explosion threshold is relative to the median loss of these steps
DEFAULT_MAX_LOSS_FACTOR = 1e6


class DivergenceError(FloatingPointError):
    """Training diverged at ``step`` (the first bad one)."""

    def __init__(self, message: str, *, step: int):
        super().__init__(message)
        self.step = step


class DivergenceGuard:
    """Keeps each step's device loss until the next :meth:`check`.

    ``get_metrics``: device metrics -> host numpy (``Strategy.get_metrics``).
    ``max_loss_factor``: a finite loss above this times the early median is divergence
    (``None``: no relative limit). ``max_loss``: an absolute limit (``None``: none).
    """

    def __init__(
        self,
        get_metrics: Callable[[PyTree], PyTree],
        *,
        start_step: int,
        max_loss_factor: float | None = DEFAULT_MAX_LOSS_FACTOR,
        max_loss: float | None = None,
    ):
        for name, value in (("max_loss_factor", max_loss_factor), ("max_loss", max_loss)):
            if value is not None and not (isinstance(value, int | float) and value > 0):
                raise ValueError(f"{name} must be a positive number or None; got {value!r}")
        self.get_metrics = get_metrics
        self.max_loss_factor, self.max_loss = max_loss_factor, max_loss
        self.step = int(start_step)  # the last step run through the wrapped train step
        self.checked_step = int(start_step)  # steps up to here are known good
        self._pending: list[tuple[int, jax.Array]] = []
        self._early: list[float] = []

    def wrap(self, train_step: TrainStep) -> TrainStep:
        """``train_step`` that keeps each step's ``loss`` for :meth:`check`."""

        def guarded(state, batch):
            state, metrics = train_step(state, batch)
            self.step += 1
            self._pending.append((self.step, metrics["loss"]))
            return state, metrics

        return guarded

    @property
    def limit(self) -> float:
        """The largest finite loss that is not divergence (``inf`` while unknown)."""
        limits = [math.inf if self.max_loss is None else float(self.max_loss)]
        if self.max_loss_factor is not None and self._early:
            # A floor, so that a run whose early loss is ~0 is not stopped by noise.
            limits.append(self.max_loss_factor * max(float(np.median(self._early)), 1e-3))
        return min(limits)

    def check(self, last_checkpoint: int | None) -> None:
        """Fetches the pending losses; raises :class:`DivergenceError` at the first bad
        step (``last_checkpoint``: the newest saved step, named in the message)."""
        if not self._pending:
            return
        steps = [step for step, _ in self._pending]
        losses = self.get_metrics([loss for _, loss in self._pending])
        self._pending.clear()
        for step, loss in zip(steps, losses, strict=True):
            loss = float(np.mean(loss))
            problem = self._problem(loss)  # against the steps before this one
            if problem:
                raise DivergenceError(_message(step, problem, last_checkpoint), step=step)
            if len(self._early) < EARLY_STEPS:
                self._early.append(loss)
            self.checked_step = step

    def _problem(self, loss: float) -> str | None:
        if not math.isfinite(loss):
            return f"the training loss is {loss}"
        if loss > self.limit:
            if self.max_loss is not None and loss > self.max_loss:
                return f"the training loss {loss:.4g} is above max_loss {self.max_loss:g}"
            median = float(np.median(self._early))
            return (
                f"the training loss {loss:.4g} exploded (over {self.max_loss_factor:g} x the "
                f"median {median:.4g} of the first steps; max_loss_factor)"
            )
        return None


def _message(step: int, problem: str, last_checkpoint: int | None) -> str:
    where = f"step {last_checkpoint}" if last_checkpoint is not None else "none"
    return (
        f"Diverged at step {step}: {problem}. Nothing after step {step - 1} was saved; last "
        f"good checkpoint: {where}. Lower optimizer.learning_rate, add "
        "optimizer.grad_clip_norm, or check the inputs."
    )


def check_state_finite(state: Mapping[str, Any] | Any, step: int) -> None:
    """Raises :class:`DivergenceError` when a floating array of ``state`` (host arrays,
    or ``jax.Array``s, sharded ones checked where they live) holds NaN or infinity,
    naming the first such array."""
    flat = [
        (path, leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
        if jnp.issubdtype(
            leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype, jnp.inexact
        )
    ]
    finite = iter(_all_finite([leaf for _, leaf in flat if isinstance(leaf, jax.Array)]))
    for path, leaf in flat:
        if isinstance(leaf, jax.Array):
            ok = bool(np.asarray(next(finite).addressable_data(0)))
        else:
            array = np.asarray(leaf)
            if not np.issubdtype(array.dtype, np.inexact):  # bfloat16 and other ml_dtypes
                array = array.astype(np.float32)
            ok = bool(np.all(np.isfinite(array)))
        if not ok:
            name = jax.tree_util.keystr(path)
            raise DivergenceError(
                f"The state at step {step} holds NaN or infinity (in {name}); it was not "
                "saved. Lower optimizer.learning_rate or add optimizer.grad_clip_norm.",
                step=step,
            )


@jax.jit
def _all_finite(arrays: list[jax.Array]) -> list[jax.Array]:
    """A scalar boolean per array, computed where the array lives (no host copy)."""
    return [jnp.all(jnp.isfinite(x)) for x in arrays]
