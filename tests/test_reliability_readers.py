"""Reading a workdir never hurts the run that writes it: a reader (``workdir.restore``,
used by detect, faces and visualize) creates, cleans, prunes and moves nothing, takes
no lock, and reads only complete steps. Real processes: a training run that saves
every step, with restores in a loop beside it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from convjax.runs import workdir as workdir_lib
from convjax.train.checkpointing import Checkpointer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

READER = textwrap.dedent(
    """
    import os, sys, time
    from convjax.runs import workdir
    W, done = sys.argv[1], sys.argv[2]
    reads = 0
    while not os.path.exists(done):
        if not os.path.isfile(os.path.join(W, "config.json")):
            time.sleep(0.05)
            continue
        try:
            workdir.restore(W)
            reads += 1
        except FileNotFoundError as error:  # before the first checkpoint
            if "No checkpoint in" not in str(error):
                raise
    print("reads", reads, flush=True)
    """
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def train_command(workdir: str, *extra: str) -> list[str]:
    return [
        sys.executable, os.path.join(ROOT, "experiments", "train.py"),
        f"--config={os.path.join(ROOT, 'configs', 'lenet5_digits.py')}:smoke",
        f"--workdir={workdir}", "--config.parallel=jit", *extra,
    ]  # fmt: skip


def snapshot(directory: str) -> dict[str, tuple[int, int]]:
    """Every path under ``directory`` -> (size, mtime_ns) (lstat: links not followed)."""
    found = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            info = os.lstat(path)
            found[os.path.relpath(path, directory)] = (info.st_size, info.st_mtime_ns)
    return found


def test_reader_leaves_an_unfinished_save_and_everything_else_alone(tmp_path, data_dir):
    """A save in flight (orbax's temporary step directory) survives a reader, and the
    reader changes no file, makes no lock, and restores the newest complete step."""
    workdir = str(tmp_path / "run")
    env = dict(os.environ, TFDS_DATA_DIR=data_dir)
    done = subprocess.run(
        train_command(workdir, "--config.num_train_steps=10", "--config.eval_every_steps=0"),
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    os.remove(os.path.join(workdir, "run.lock"))
    in_flight = os.path.join(workdir, "checkpoints", "20.orbax-checkpoint-tmp")
    os.makedirs(os.path.join(in_flight, "default.orbax-checkpoint-tmp"))
    before = snapshot(workdir)
    os.environ["TFDS_DATA_DIR"] = data_dir
    try:
        restored = workdir_lib.restore(workdir)
    finally:
        del os.environ["TFDS_DATA_DIR"]
    assert restored.step == 10
    assert snapshot(workdir) == before  # nothing cleaned, written, locked or moved


def test_reader_never_moves_an_unreadable_step(tmp_path, capfd):
    directory = str(tmp_path / "checkpoints")
    writer = Checkpointer(directory, keep=None, async_save=False)
    for step in (1, 2):
        writer.save(step, {"w": np.full(4, float(step), np.float32)})
    writer.close()
    os.remove(os.path.join(directory, "2", "default", "_METADATA"))
    before = snapshot(directory)
    reader = Checkpointer(directory, read_only=True)
    restored = reader.restore({"w": np.zeros(4, np.float32)})
    reader.close()
    np.testing.assert_array_equal(restored["w"], np.full(4, 1.0, np.float32))
    assert "Checkpoint step 2 is unreadable" in capfd.readouterr().err
    assert snapshot(directory) == before
    with pytest.raises(RuntimeError, match="read-only"):
        Checkpointer(directory, read_only=True).save(3, {"w": np.zeros(4)})


def test_restores_in_a_loop_beside_training_do_not_hurt_it(tmp_path, data_dir):
    """A run that saves every step (so a save is nearly always in flight, and pruning
    removes a step every step) finishes while another process restores in a loop."""
    workdir = str(tmp_path / "run")
    done = str(tmp_path / "done")
    env = dict(os.environ, TFDS_DATA_DIR=data_dir, PYTHONPATH=ROOT)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, workdir, done],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        training = subprocess.run(
            train_command(
                workdir, "--config.num_train_steps=60", "--config.checkpoint_every_steps=1",
                "--config.eval_every_steps=0", "--config.log_every_steps=20",
            ),
            env=env, capture_output=True, text=True, timeout=400,
        )  # fmt: skip
    finally:
        open(done, "w").close()
        out, err = reader.communicate(timeout=300)
    assert training.returncode == 0, training.stdout[-2000:] + training.stderr[-3000:]
    assert reader.returncode == 0, err[-3000:]
    assert int(out.split()[-1]) >= 1, out + err[-2000:]  # it did read while training ran
    steps = sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())
    assert steps == [58, 59, 60]
