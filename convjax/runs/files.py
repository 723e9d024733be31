"""Files a run writes in its workdir, and the JSON files it reads back.

Every file is written whole or not at all (:func:`replace_file`: a temporary file in
the same folder, renamed over the old one): a killed or failing write leaves the old
file as it was, and a symbolic link in the workdir is replaced, never written through,
so a run writes only inside its workdir. A write that fails for want of space, a
read-only disk or permission raises :class:`WriteError`: one line naming what failed,
where, and how much space was needed and free.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import IO, Any

# The write failures a user can fix (space, a read-only disk, permissions).
USER_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class WriteError(OSError):
    """A write into the workdir that failed for a reason the user can fix (scripts print
    it as one line and exit with ``exit_code``)."""

    exit_code = 1

    def __str__(self) -> str:
        return str(self.strerror)


def free_bytes(path: str) -> int | None:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _size(num_bytes: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:,} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return ""


def write_error(
    what: str, path: str, error: BaseException, needed: int | None = None
) -> WriteError:
    """The one-line :class:`WriteError` for ``what`` (e.g. ``'writing metrics.csv'``)
    failing at ``path`` with ``error``; ``needed``: bytes the write needed, when known."""
    code = getattr(error, "errno", None) or errno.ENOSPC
    reason = os.strerror(code).lower()
    space = ""
    if code in (errno.ENOSPC, errno.EDQUOT):
        free = free_bytes(path)
        needed_text = f"needed {_size(needed)}, " if needed else ""
        space = f" ({needed_text}{_size(free) if free is not None else 'unknown'} free)"
    return WriteError(code, f"{what} failed: {reason} at {path}{space}")


def is_user_write_error(error: BaseException) -> bool:
    """Whether ``error`` is a write failure the user can fix (:data:`USER_WRITE_ERRNOS`;
    also as TensorStore reports it inside orbax's errors)."""
    if isinstance(error, OSError) and error.errno in USER_WRITE_ERRNOS:
        return True
    text = str(error)
    return any(f"[os_error_code='{code}']" in text for code in USER_WRITE_ERRNOS) or (
        "No space left on device" in text or "Read-only file system" in text
    )


def user_errno(error: BaseException) -> int:
    """The errno of a :func:`is_user_write_error` error."""
    if isinstance(error, OSError) and error.errno:
        return error.errno
    for code in USER_WRITE_ERRNOS:
        if f"[os_error_code='{code}']" in str(error):
            return code
    return errno.EROFS if "Read-only file system" in str(error) else errno.ENOSPC


@contextlib.contextmanager
def replace_file(
    path: str, mode: str = "w", *, what: str | None = None, newline: str | None = None
) -> Iterator[IO[Any]]:
    """Opens a new temporary file beside ``path``; when the block ends, renames it over
    ``path`` (replacing a link, never following it). On any error the temporary file is
    removed and ``path`` is left as it was; a write the user can fix raises
    :class:`WriteError` (``what`` names the write, default: ``'writing <name>'``)."""
    directory = os.path.dirname(os.path.abspath(path))
    what = what or f"writing {os.path.basename(path)}"
    temporary = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
        with os.fdopen(fd, mode, newline=newline) as f:
            yield f
            f.flush()
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
        temporary = None
    except OSError as error:
        if is_user_write_error(error):
            raise write_error(what, path, error) from None
        raise
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.remove(temporary)


def read_json(path: str) -> Any:
    """The JSON value in ``path``; a file that is not valid JSON raises a one-line
    ``ValueError`` naming it."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); fix or remove it") from None


_LOCAL_FILE = re.compile(r'local file "([^"]+)"')
_TMP_STEP = re.compile(r"(.*)/(\d+)\.orbax-checkpoint-tmp")


def tree_bytes(path: str) -> int:
    """Bytes of the files under ``path`` (links not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.lstat(os.path.join(root, name)).st_size for name in files)
    return total


def checkpoint_write_error(error: BaseException, checkpoints: str) -> WriteError:
    """One line for a failed checkpoint save (orbax/TensorStore report it as a long
    ``ValueError``): the step, the folder, the reason, and the space the newest saved
    step takes (what the next one needs, about) against the space free."""
    path = (_LOCAL_FILE.findall(str(error)) or [checkpoints])[0]
    step = _TMP_STEP.match(path)
    steps = (
        [n for n in os.listdir(checkpoints) if n.isdigit()] if os.path.isdir(checkpoints) else []
    )
    needed = tree_bytes(os.path.join(checkpoints, max(steps, key=int))) if steps else None
    what = f"saving checkpoint step {step.group(2)}" if step else "saving a checkpoint"
    failure = write_error(what, checkpoints, OSError(user_errno(error), ""), needed)
    if steps:
        failure = WriteError(
            failure.errno,
            f"{failure.strerror}; the newest saved checkpoint, step "
            f"{max(steps, key=int)}, is intact",
        )
    return failure
