"""A full disk and a read-only workdir: the training run ends with one line saying what
failed, where, and how much space was needed; nothing in its clean-up masks that error;
the previous checkpoint stays intact and a reader still restores it. Real processes on a
real 3 MiB tmpfs, mounted in a private mount namespace (``unshare -m``; as a user
without root, ``unshare -rm``), so nothing outlives the test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCENARIO = r"""
set -u
mount -t tmpfs -o size=3m tmpfs "$DISK" || exit 97
train() {
  "$PY" "$ROOT/experiments/train.py" --config="$ROOT/configs/lenet5_digits.py:smoke" \
    --workdir="$DISK/run" --config.parallel=jit --config.eval_every_steps=0 \
    --config.num_train_steps=40 --config.checkpoint_every_steps=1 \
    --config.keep_checkpoints=1000 --config.log_every_steps=1
}
restore() {
  "$PY" -c "import sys; from convjax.runs import workdir as w; print(w.restore(sys.argv[1]).step)" \
    "$DISK/run"
}
train > "$OUT/full.out" 2> "$OUT/full.err"; echo $? > "$OUT/full.rc"
ls "$DISK/run/checkpoints" > "$OUT/full.ls"
restore > "$OUT/full.restore" 2>&1
mount -o remount,ro "$DISK" || exit 98
train > "$OUT/ro.out" 2> "$OUT/ro.err"; echo $? > "$OUT/ro.rc"
restore > "$OUT/ro.restore" 2>&1
"""


def namespace() -> list[str]:
    if shutil.which("unshare") is None:
        pytest.fail("needs util-linux's unshare to mount a small tmpfs privately")
    return ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]


def test_full_disk_and_read_only_workdir_end_in_one_line(tmp_path):
    out, disk = tmp_path / "out", tmp_path / "disk"
    out.mkdir()
    disk.mkdir()
    data_dir = str(tmp_path / "tfds")
    env = dict(os.environ, DISK=str(disk), OUT=str(out), PY=sys.executable, ROOT=ROOT,
               PYTHONPATH=ROOT, TFDS_DATA_DIR=data_dir)  # fmt: skip
    done = subprocess.run(
        [*namespace(), "sh", "-c", SCENARIO], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr  # 97/98: mounting failed
    read = lambda name: (out / name).read_text()  # noqa: E731

    full_err = read("full.err")
    assert read("full.rc").strip() == "1", read("full.out")[-2000:] + full_err[-3000:]
    assert "Traceback" not in full_err, full_err[-3000:]
    assert full_err.count("\n") == 1, full_err[-3000:]  # exactly one line on stderr
    assert full_err.startswith("error: saving checkpoint step ")
    assert "no space left on device" in full_err and "needed " in full_err
    assert str(disk / "run" / "checkpoints") in full_err and " free)" in full_err
    steps = sorted(int(n) for n in read("full.ls").split() if n.isdigit())
    assert steps and f"step {steps[-1]}, is intact" in full_err
    assert read("full.restore").split()[-1] == str(steps[-1])  # the previous one restores

    ro_err = read("ro.err")
    assert read("ro.rc").strip() == "1", ro_err[-3000:]
    assert "Traceback" not in ro_err and ro_err.count("\n") == 1, ro_err[-3000:]
    assert "read-only file system" in ro_err and str(disk / "run") in ro_err
    assert read("ro.restore").split()[-1] == str(steps[-1])  # a reader needs no writes
