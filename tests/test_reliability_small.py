"""Smaller reliability fixes: a damaged checkpoint is recovered without tracebacks,
Ctrl-C during a dataset build is one line and leaves no partial build, corrupt weights
files are one line, and ``box_area`` takes only ``[..., 4]`` boxes. Real processes
where the behaviour is a process's."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from convjax.models import get_model
from convjax.models.pretrained import load_pretrained
from convjax.ops.boxes import box_area

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_box_area_checks_the_last_axis():
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 10, (5, 4)).astype(np.float32)
    want = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    np.testing.assert_allclose(box_area(jnp.asarray(boxes)), want, rtol=1e-6)
    with pytest.raises(ValueError, match=r"boxes \[\.\.\., 4\].*got \(5, 3\)"):
        box_area(jnp.asarray(boxes[:, :3]))


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("weights.npz", b"", "the file is empty"),
        ("weights.safetensors", b"", "the file is empty"),
        ("weights.safetensors", b"these are not weights\n", "not a readable safetensors file"),
        ("weights.npz", b"these are not weights\n", "not an .npz archive"),
    ],
)
def test_corrupt_weights_files_are_one_line(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=reason) as caught:
        load_pretrained(get_model("resnet18", num_classes=10), {}, str(path))
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_ctrl_c_during_a_dataset_build_is_one_line_and_cleans_up(tmp_path):
    data_dir = tmp_path / "tfds"
    proc = subprocess.Popen(
        [sys.executable, "experiments/prepare_data.py", "--datasets=shapes/scenes",
         f"--data_dir={data_dir}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen = ""
    while "Building offline dataset" not in seen:
        char = proc.stdout.read(1)
        assert char, seen + proc.stderr.read()
        seen += char
    time.sleep(2.0)  # inside the build (it takes a minute or more)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, seen + out + err
    assert "Traceback" not in out + err, err[-3000:]
    assert err.strip().splitlines() == [
        "Interrupted (SIGINT) while building shapes/scenes: the partial build was removed; "
        "run the same command to build it again."
    ], err[-3000:]
    assert not glob.glob(str(data_dir / "shapes" / "**" / "*incomplete*"), recursive=True)
    assert not (data_dir / "shapes" / "scenes").exists()


def test_recovering_a_truncated_checkpoint_prints_no_traceback(tmp_path):
    workdir, data_dir = str(tmp_path / "run"), str(tmp_path / "tfds")
    command = [
        sys.executable, "experiments/train.py", "--config=configs/lenet5_digits.py:smoke",
        f"--workdir={workdir}", "--config.parallel=jit", "--config.eval_every_steps=0",
    ]  # fmt: skip
    env = dict(os.environ, TFDS_DATA_DIR=data_dir)
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert first.returncode == 0, first.stderr[-3000:]
    data = max(glob.glob(f"{workdir}/checkpoints/20/**/d/*", recursive=True), key=os.path.getsize)
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr + again.stdout, again.stderr[-3000:]
    assert again.stderr.count("Checkpoint step 20 is unreadable") == 1, again.stderr[-3000:]
    assert "at step 10" in again.stdout
