"""Stop requests (SIGTERM: preemption; SIGINT: Ctrl-C) turned into a clean stop at a step
boundary, agreed by every host.

Inside ``with StopSignals() as stop:`` the first SIGTERM or SIGINT only records the
request: no ``KeyboardInterrupt`` is raised inside the input pipeline or a compiled
step. The step loop asks :meth:`StopSignals.should_stop` after each step; the training
run then saves that step and raises :class:`TrainingInterrupted`, whose ``exit_code``
is the shell's ``128 + signal`` (130 for Ctrl-C, 143 for SIGTERM). A second Ctrl-C
while stopping interrupts at once (the default ``KeyboardInterrupt``).

On several hosts a signal may reach only some of them (or reach them at different
steps). Every ``agree_every`` steps the hosts all-gather their requests
(:func:`jax.experimental.multihost_utils.process_allgather` of one integer), so all
of them stop, and save, at the same step. On one host the request is acted on at the
next step boundary, without any collective.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

import jax
import numpy as np

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(Exception):
    """The run stopped on a signal at ``step`` (after saving it when ``saved``).

    ``exit_code`` is ``128 + signum``, what a shell reports for a process ended by it.
    """

    def __init__(self, message: str, *, signum: int, step: int, saved: bool):
        super().__init__(message)
        self.signum, self.step, self.saved = int(signum), int(step), saved
        self.exit_code = 128 + self.signum


class StopSignals:
    """Records SIGTERM/SIGINT while active; :meth:`should_stop` says when to stop.

    ``agree_every``: on several processes, steps between the all-gathers that agree on
    a stop (every process must call :meth:`should_stop` at every step). Handlers are
    installed only from the main thread (elsewhere signals keep their handlers).
    """

    def __init__(self, *, agree_every: int = 10):
        self.agree_every = max(int(agree_every), 1)
        self.signum: int | None = None  # the first signal received here
        self.agreed_signum: int | None = None  # the signal every host stops for
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            return
        if signum == signal.SIGINT:  # a second Ctrl-C: stop now
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        """Whether this process has received a stop signal."""
        return self.signum is not None

    def should_stop(self, step: int) -> bool:
        """Whether every process stops after ``step`` (call it on every process, at
        every step). On one process: whether a signal has arrived."""
        if self.agreed_signum is not None:
            return True
        if jax.process_count() == 1:
            self.agreed_signum = self.signum
        elif step % self.agree_every == 0:
            signums = agree(self.signum or 0)
            self.agreed_signum = int(max(signums)) if max(signums) > 0 else None
        return self.agreed_signum is not None


def agree(signum: int) -> np.ndarray:
    """Every process's ``signum`` (0: none), in process order (a collective: all
    processes must call it)."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.int32(signum))).reshape(-1)
