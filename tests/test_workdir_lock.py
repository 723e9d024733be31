"""One run per workdir: real processes hold the lock, a second is refused with the holder's
details, and ``kill -9`` of the holder leaves nothing stuck."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from convjax.runs.lock import LOCK_FILE, WorkdirBusyError, WorkdirLock

HOLD = textwrap.dedent(
    """
    import sys, time
    from convjax.runs.lock import WorkdirLock
    WorkdirLock(sys.argv[1], command="python experiments/train.py --workdir=W").acquire()
    print("held", flush=True)
    time.sleep(120)
    """
)
TRY = textwrap.dedent(
    """
    import sys
    from convjax.runs.lock import WorkdirBusyError, WorkdirLock
    try:
        with WorkdirLock(sys.argv[1]):
            print("acquired")
    except WorkdirBusyError as error:
        sys.exit(str(error))
    """
)


def start_holder(workdir: str) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, workdir], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def run_try(workdir: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", TRY, workdir], capture_output=True, text=True, timeout=60
    )


def test_second_run_is_refused_and_a_killed_holder_leaves_nothing_stuck(tmp_path):
    workdir = str(tmp_path / "run")
    holder = start_holder(workdir)
    try:
        with pytest.raises(WorkdirBusyError) as busy:
            WorkdirLock(workdir).acquire()
        message = str(busy.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert "started 20" in message and "--workdir=W" in message
        assert len(message.splitlines()) == 1
        refused = run_try(workdir)  # another process is refused the same way
        assert refused.returncode == 1 and f"pid {holder.pid}" in refused.stderr
        assert "acquired" not in refused.stdout
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    # The record of the dead holder is still in the file, but the lock died with it.
    assert str(holder.pid) in open(os.path.join(workdir, LOCK_FILE)).read()
    after = run_try(workdir)
    assert after.returncode == 0 and after.stdout.strip() == "acquired", after.stderr
    with WorkdirLock(workdir) as lock:
        assert lock.held
    assert not lock.held


def test_lock_is_released_on_exit_and_exception_and_refused_within_one_process(tmp_path):
    workdir = str(tmp_path / "run")
    with pytest.raises(KeyError), WorkdirLock(workdir):
        raise KeyError("a failing run")
    first = WorkdirLock(workdir, command="first run").acquire()
    with pytest.raises(WorkdirBusyError, match=f"pid {os.getpid()} .*command: first run"):
        WorkdirLock(workdir).acquire()  # a second open file is a second holder
    first.release()
    assert open(os.path.join(workdir, LOCK_FILE)).read() == ""
    with WorkdirLock(workdir):
        pass
