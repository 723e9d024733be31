"""Damaged orbax checkpoints: restore falls back to the newest readable step, names the bad
one and moves it aside (never deletes it); ``keep_checkpoints`` below 1 is refused."""

from __future__ import annotations

import glob
import os

import jax
import numpy as np
import pytest

from convjax.train.checkpointing import (
    CORRUPT_DIR,
    Checkpointer,
    CheckpointMismatchError,
    CorruptCheckpointError,
)

STEPS = (10, 20, 30)


def items(step: int) -> dict:
    """A TrainState-like tree whose arrays are big enough to span several data bytes."""
    rng = np.random.default_rng(step)
    return {
        "step": np.int32(step),
        "params": {"w": rng.normal(size=(48, 48)).astype(np.float32), "b": np.arange(3.0)},
        "opt_state": (np.zeros(2), {"mu": np.full(5, float(step))}),
        "rng": np.array([step, 1], np.uint32),
    }


def save_steps(directory: str) -> None:
    checkpointer = Checkpointer(directory, keep=5, async_save=False)
    for step in STEPS:
        checkpointer.save(step, items(step))
    checkpointer.close()


def truncate_array_file(step_dir: str) -> None:
    data = max(glob.glob(f"{step_dir}/**/d/*", recursive=True), key=os.path.getsize)
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)


def garbage(path: str):
    def corrupt(step_dir: str) -> None:
        with open(os.path.join(step_dir, path), "wb") as f:
            f.write(b"\x00garbage{not what orbax wrote")

    return corrupt


def remove_metadata(step_dir: str) -> None:
    os.remove(os.path.join(step_dir, "default", "_METADATA"))


# name -> (corrupt the newest step directory, expected reason in the message)
CORRUPTIONS = {
    "truncated_array_file": (truncate_array_file, "OUT_OF_RANGE"),
    "garbage_manifest_ocdbt": (garbage("default/manifest.ocdbt"), "decoding manifest"),
    "garbage_METADATA": (garbage("default/_METADATA"), "default/_METADATA is not valid JSON"),
    "missing_METADATA": (remove_metadata, "missing _METADATA"),
}


def expect_restored(restored: dict, step: int) -> None:
    want = items(step)
    assert int(restored["step"]) == step
    np.testing.assert_array_equal(restored["params"]["w"], want["params"]["w"])
    np.testing.assert_array_equal(restored["opt_state"][1]["mu"], want["opt_state"][1]["mu"])


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_latest_falls_back_and_is_moved_aside(tmp_path, capfd, name):
    directory = str(tmp_path / "checkpoints")
    save_steps(directory)
    corrupt, reason = CORRUPTIONS[name]
    corrupt(os.path.join(directory, "30"))
    files_before = sorted(
        os.path.relpath(p, os.path.join(directory, "30"))
        for p in glob.glob(f"{directory}/30/**", recursive=True)
    )

    checkpointer = Checkpointer(directory, async_save=False)
    restored = checkpointer.restore(items(0))
    expect_restored(restored, 20)
    message = capfd.readouterr().err.strip().splitlines()
    assert len(message) == 1, message
    assert "step 30" in message[0] and reason in message[0], message[0]
    assert checkpointer.latest_step() == 20 and 30 not in checkpointer.all_steps()
    [aside] = checkpointer.set_aside
    assert aside.step == 30 and aside.moved_to.startswith(os.path.join(directory, CORRUPT_DIR))
    files_after = sorted(
        os.path.relpath(p, aside.moved_to)
        for p in glob.glob(f"{aside.moved_to}/**", recursive=True)
    )
    assert files_after == files_before  # moved, not deleted

    # Training goes on: step 30 is written again and restores; the set-aside copy stays.
    checkpointer.save(30, items(30))
    checkpointer.close()
    again = Checkpointer(directory, async_save=False)
    expect_restored(again.restore(items(0)), 30)
    assert again.all_steps() == [10, 20, 30] and os.path.isdir(aside.moved_to)
    again.close()


def test_stray_empty_step_directory_is_skipped(tmp_path, capfd):
    directory = str(tmp_path / "checkpoints")
    save_steps(directory)
    os.mkdir(os.path.join(directory, "40"))
    checkpointer = Checkpointer(directory, async_save=False)
    assert checkpointer.latest_step() == 40
    expect_restored(checkpointer.restore(items(0)), 30)
    err = capfd.readouterr().err
    assert "step 40" in err and "empty step directory" in err
    assert os.path.isdir(os.path.join(directory, CORRUPT_DIR, "40-empty"))
    assert checkpointer.all_steps() == [10, 20, 30]
    checkpointer.close()


def test_every_checkpoint_corrupt_returns_none_and_keeps_them(tmp_path, capfd):
    directory = str(tmp_path / "checkpoints")
    save_steps(directory)
    for step in STEPS:
        remove_metadata(os.path.join(directory, str(step)))
    checkpointer = Checkpointer(directory, async_save=False)
    assert checkpointer.restore(items(0)) is None
    assert [a.step for a in checkpointer.set_aside] == [30, 20, 10]
    assert len(capfd.readouterr().err.strip().splitlines()) == 3
    assert sorted(os.listdir(os.path.join(directory, CORRUPT_DIR))) == [
        f"{s}-missing-metadata" for s in STEPS
    ]
    checkpointer.close()


def test_explicit_corrupt_step_raises_and_moves_nothing(tmp_path):
    directory = str(tmp_path / "checkpoints")
    save_steps(directory)
    truncate_array_file(os.path.join(directory, "20"))
    checkpointer = Checkpointer(directory, async_save=False)
    with pytest.raises(CorruptCheckpointError, match="step 20 .* cannot be read: .*OUT_OF_RANGE"):
        checkpointer.restore(items(0), step=20)
    with pytest.raises(ValueError, match=r"no checkpoint step 25 .*available: \[10, 20, 30\]"):
        checkpointer.restore(items(0), step=25)
    assert checkpointer.all_steps() == [10, 20, 30]
    assert not os.path.exists(os.path.join(directory, CORRUPT_DIR))
    checkpointer.close()


def test_readable_checkpoint_of_another_model_is_refused_not_called_corrupt(tmp_path):
    """A changed config (other shapes, other arrays) is a short error; the files stay put."""
    directory = str(tmp_path / "checkpoints")
    save_steps(directory)
    checkpointer = Checkpointer(directory, async_save=False)
    other = items(0)
    other["params"]["w"] = np.zeros((10, 10), np.float32)
    with pytest.raises(CheckpointMismatchError, match=r"params/w saved \[48, 48\], expected \[10"):
        checkpointer.restore(other)
    other["params"]["extra"] = np.zeros(3)
    del other["opt_state"]
    with pytest.raises(CheckpointMismatchError) as error:
        checkpointer.restore(other)
    message = str(error.value)
    assert "step 30" in message and "params/extra not in the checkpoint" in message
    assert "opt_state/0 only in the checkpoint" in message and len(message) < 400
    assert checkpointer.all_steps() == [10, 20, 30] and checkpointer.set_aside == []
    assert not os.path.exists(os.path.join(directory, CORRUPT_DIR))
    checkpointer.close()


@pytest.mark.parametrize("keep", [0, -1, 1.5, True])
def test_keep_checkpoints_below_one_is_refused(tmp_path, keep):
    with pytest.raises(ValueError, match="keep_checkpoints must be an integer >= 1"):
        Checkpointer(str(tmp_path / "checkpoints"), keep=keep)
    assert not os.path.exists(tmp_path / "checkpoints")


def test_keep_one_keeps_the_final_checkpoint(tmp_path):
    directory = str(tmp_path / "checkpoints")
    checkpointer = Checkpointer(directory, keep=1, async_save=False)
    for step in STEPS:
        checkpointer.save(step, items(step))
    checkpointer.close()
    assert Checkpointer(directory).all_steps() == [30]


def test_restore_into_shape_dtype_structs(tmp_path):
    directory = str(tmp_path / "checkpoints")
    save_steps(directory)
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), items(0)
    )
    checkpointer = Checkpointer(directory, async_save=False)
    expect_restored(checkpointer.restore(target, step=20), 20)
    checkpointer.close()
