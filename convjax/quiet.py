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
- ``RuntimeError: Event loop is closed`` tracebacks that TensorStore prints when an
  orbax read or write completes after its event loop closed (after a failed save or a
  damaged checkpoint); the failure itself is reported where it happened.

Every variable is a default: one set in the environment wins. This module imports
neither JAX nor TensorFlow.
"""

from __future__ import annotations

import atexit
import functools
import io
import logging
import os
import sys
import threading
from collections.abc import Callable

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
    """absl logging at WARNING in the plain format, without :data:`NOISE` (nothing
    changes when the command line gave ``--verbosity``), and stdout line-buffered, so
    progress lines reach a log file or pipe as they are printed, in order with the
    warnings. Call in ``main`` (after absl parsed the flags). Idempotent."""
    from absl import flags
    from absl import logging as absl_logging

    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    if flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present:
        return
    if not isinstance(sys.unraisablehook, _LateCallbackHook):
        sys.unraisablehook = _LateCallbackHook(sys.unraisablehook)
    if not isinstance(sys.excepthook, _LateCallbackHook):
        sys.excepthook = _LateCallbackHook(sys.excepthook)
    absl_logging.set_verbosity(absl_logging.WARNING)
    absl_logging.get_absl_handler().setFormatter(PlainFormatter())
    absl_logger = absl_logging.get_absl_logger()
    if not any(isinstance(f, DropNoise) for f in absl_logger.filters):
        absl_logger.addFilter(DropNoise())


def _late_loop_callback(kind: type[BaseException] | None, value: BaseException | None) -> bool:
    """Whether an exception is TensorStore's ``RuntimeError: Event loop is closed``: a
    read or write of orbax completing after its event loop closed (after a failed save,
    or a checkpoint found damaged). The operation's own error is reported where it was
    raised, so its traceback only buries that."""
    if kind is not RuntimeError or str(value) != "Event loop is closed":
        return False
    tb = value.__traceback__ if value is not None else None
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "call_soon_threadsafe":
            return True
        tb = tb.tb_next
    return False


class _LateCallbackHook:
    """``sys.unraisablehook`` or ``sys.excepthook`` (TensorStore reports those through
    either) without :func:`_late_loop_callback` exceptions."""

    def __init__(self, hook: Callable[..., None]):
        self.hook = hook

    def __call__(self, *args) -> None:
        if len(args) == 1:  # sys.unraisablehook(unraisable)
            kind, value = args[0].exc_type, args[0].exc_value
        else:  # sys.excepthook(kind, value, traceback)
            kind, value = args[0], args[1]
        if not _late_loop_callback(kind, value):
            self.hook(*args)


# What a user's input causes (a config field, a path, a workdir, a diverging run): each
# is raised with a message that says what to change, so a traceback adds nothing.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError)


def _exit_code(error: BaseException) -> int | None:
    """The exit status for an exception a user should see as one line, else None:
    :data:`USER_ERRORS` exit 1; an exception with an integer ``exit_code`` attribute
    (a busy workdir: 1; a run stopped by a signal: 128 + the signal) exits with it."""
    code = getattr(error, "exit_code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    return 1 if isinstance(error, USER_ERRORS) else None


def one_line_errors(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    """``main`` that reports what a user caused as one line on stderr instead of a
    traceback (``app.run(one_line_errors(main))``): ``error: <message>`` and exit status
    1 for :data:`USER_ERRORS` and the exceptions that carry an ``exit_code``; a run
    stopped by a signal (``exit_code`` >= 128) prints its message as it is and exits
    with that code. With an explicit ``--verbosity`` (e.g. ``--verbosity=0``) the
    exception propagates, traceback and all."""

    @functools.wraps(main)
    def run(argv: list[str]) -> None:
        try:
            main(argv)
        except Exception as error:
            from absl import flags

            code = _exit_code(error)
            verbose = flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present
            if code is None or verbose:
                raise
            print(("" if code >= 128 else "error: ") + str(error), file=sys.stderr, flush=True)
            sys.exit(code)

    return run


def exit_now(status: int = 0) -> None:
    """Ends the process once its work is done and written: waits for non-daemon
    threads, runs the ``atexit`` handlers (logging, JAX's distributed shutdown, ...),
    flushes stdout and stderr, then leaves with ``os._exit(status)``. That skips only
    the interpreter's teardown of every imported module, which with TensorFlow loaded
    takes seconds (about 4-7 s on a 2-core machine) after the run's last line."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # noqa: SLF001 -- what normal interpreter exit runs first
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def cli_main(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    """A script's ``main`` for ``app.run(cli_main(main))``: a ``--config`` flag that does
    not load refused in one line at once, before absl parses the flags
    (:func:`convjax.config_check.check_config_flag`), user errors as one line
    (:func:`one_line_errors`), and a prompt exit (:func:`exit_now`) once it returns or
    has printed that line (a run stopped by SIGTERM included)."""
    from convjax.config_check import check_config_flag

    check_config_flag()
    main = one_line_errors(main)

    @functools.wraps(main)
    def run(argv: list[str]) -> None:
        try:
            main(argv)
        except SystemExit as done:  # a one-line error: exit as promptly as after success
            if not isinstance(done.code, int):
                raise
            exit_now(done.code)
        exit_now(0)

    return run
