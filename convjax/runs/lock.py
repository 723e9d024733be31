"""One run per workdir: an advisory lock that a second run is refused by.

The lock is an exclusive ``flock`` on ``<workdir>/run.lock``, held by the process for as
long as it runs. The operating system releases it when the process ends in any way
(exit, exception, ``kill -9``, a crashed host's reboot), so a killed run never leaves a
workdir stuck; there is no stale-lock cleanup to get wrong. While held, the file
records who holds it (pid, host, start time, command) so that the refusal names the
running one. ``flock`` also works on NFS (Linux emulates it with POSIX locks there).

In a multi-host run only the first host takes the lock: every host writes the same
workdir on purpose.

Usage::

    with WorkdirLock(workdir):
        train(...)

Drivers use :func:`hold`, which a driver that calls another driver on the same workdir
(faces ``train_and_evaluate`` -> the training run) may nest.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
from collections.abc import Iterator
from types import TracebackType

from convjax.runs.files import is_user_write_error, write_error

LOCK_FILE = "run.lock"


class WorkdirBusyError(RuntimeError):
    """Another live process holds the workdir's lock (scripts exit with ``exit_code``)."""

    exit_code = 1


class WorkdirLock:
    """An exclusive, non-blocking lock on ``workdir`` (created if missing).

    ``command`` is recorded for the refusal message (default: this process's argv).
    """

    def __init__(self, workdir: str, *, command: str | None = None):
        self.workdir = os.path.abspath(workdir)
        self.path = os.path.join(self.workdir, LOCK_FILE)
        self.command = command if command is not None else shlex.join(sys.argv)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> WorkdirLock:
        """Takes the lock or raises :class:`WorkdirBusyError` naming the holder."""
        if self._fd is not None:
            return self
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise WorkdirBusyError(
                f"workdir {self.workdir} is in use by {holder}. Wait for it to finish (or "
                "stop it), or pass another --workdir."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": self.command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def _open(self) -> int:
        """The lock file's descriptor (created if missing). A link is refused, never
        followed: the run writes only inside its workdir."""
        try:
            os.makedirs(self.workdir, exist_ok=True)
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            return os.open(self.path, flags, 0o644)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise ValueError(
                    f"{self.path} is a symbolic link (to {os.readlink(self.path)}); a run "
                    f"writes only inside its workdir: remove the link and run again"
                ) from None
            if is_user_write_error(error):
                raise write_error("taking the workdir's lock", self.path, error) from None
            raise

    def release(self) -> None:
        """Clears the record and releases the lock (the empty file stays)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """'pid 123 on host h (started 2024-..., command: ...)' from the lock file."""
    try:
        record = json.loads(os.pread(fd, 65536, 0).decode() or "{}")
    except (OSError, ValueError):
        record = {}
    if not record:
        return "another process (it has not written its details yet)"
    return (
        f"pid {record.get('pid', '?')} on host {record.get('host', '?')} "
        f"(started {record.get('started', '?')}; command: {record.get('command', '?')})"
    )


_HELD: dict[str, WorkdirLock] = {}  # workdirs this process holds through hold()


@contextlib.contextmanager
def hold(workdir: str, *, enabled: bool = True) -> Iterator[WorkdirLock | None]:
    """Holds ``workdir``'s lock for the block (``enabled=False``: takes nothing, e.g. on
    hosts other than the first of a multi-host run). Nested ``hold`` of a workdir that
    this process already holds is a no-op, so drivers may call each other; a second
    process is refused with :class:`WorkdirBusyError`."""
    path = os.path.abspath(workdir)
    if not enabled or path in _HELD:
        yield _HELD.get(path)
        return
    lock = WorkdirLock(path).acquire()
    _HELD[path] = lock
    try:
        yield lock
    finally:
        del _HELD[path]
        lock.release()
