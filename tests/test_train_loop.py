"""End to end: the default experiment's smoke run, kill -9 and resume, config errors."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from convjax.runs.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import lenet5_digits  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def smoke_config(data_dir, **overrides):
    config = lenet5_digits.get_config("smoke")
    config.dataset.data_dir = data_dir
    for key, value in overrides.items():
        config[key] = value
    return config


def test_smoke_run_writes_everything(data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    metrics = train_and_evaluate(smoke_config(data_dir, parallel="pmap"), workdir)
    assert metrics["count"] == 359  # every test example exactly once
    assert 0.0 <= metrics["accuracy"] <= 1.0 and np.isfinite(metrics["loss"])
    for name in ("config.json", "metrics.jsonl", "metrics.csv", "results.json"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[-1] == "20"
    with Image.open(os.path.join(workdir, "training_curves.png")) as png:
        assert png.size[0] > 300 and png.size[1] > 200
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == [5, 10, 15, 20]
    assert records[0]["loss"] > records[-2]["loss"]  # it learns
    assert any(f.startswith("events") for f in os.listdir(os.path.join(workdir, "tensorboard")))
    # A finished run started again restores and only evaluates.
    again = train_and_evaluate(smoke_config(data_dir, parallel="jit"), workdir)
    assert again["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)


def _command(workdir, data_dir, steps):
    return [
        sys.executable,
        os.path.join(ROOT, "experiments", "train.py"),
        f"--config={os.path.join(ROOT, 'configs', 'lenet5_digits.py')}:smoke",
        f"--workdir={workdir}",
        f"--config.num_train_steps={steps}",
        "--config.checkpoint_every_steps=10",
        "--config.log_every_steps=10",
        f"--config.eval_every_steps={steps}",
    ]


def _finished_checkpoints(workdir):
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def test_sigkill_then_resume_continues_and_matches_uninterrupted(data_dir, tmp_path):
    steps = 120
    env = dict(os.environ, TFDS_DATA_DIR=data_dir)  # 4 simulated devices, as in this process
    reference = str(tmp_path / "reference")
    done = subprocess.run(
        _command(reference, data_dir, steps), env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    expected = json.load(open(os.path.join(reference, "results.json")))["eval"]

    workdir = str(tmp_path / "killed")
    proc = subprocess.Popen(
        _command(workdir, data_dir, steps), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )
    deadline = time.time() + 300
    while not [s for s in _finished_checkpoints(workdir) if s >= 20] and time.time() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = _finished_checkpoints(workdir)
    assert saved and max(saved) < steps
    assert not os.path.exists(os.path.join(workdir, "results.json"))

    resumed = subprocess.run(
        _command(workdir, data_dir, steps), env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {max(saved)}" in resumed.stdout
    # The resumed run only logs steps after the checkpoint.
    first_logged = [line for line in resumed.stdout.splitlines() if line.startswith("step ")][0]
    assert int(first_logged.split()[1].split("/")[0]) > max(saved)
    result = json.load(open(os.path.join(workdir, "results.json")))["eval"]
    assert abs(result["accuracy"] - expected["accuracy"]) <= 0.005
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    steps_logged = [r["step"] for r in records if r["split"] == "train"]
    assert steps_logged == sorted(set(steps_logged)) == list(range(10, steps + 1, 10))


def test_config_errors_are_clear_and_early(data_dir, tmp_path):
    with pytest.raises(ValueError, match="Unknown model 'lenet'.*Valid models: .*lenet5"):
        train_and_evaluate(smoke_config(data_dir, model="lenet"), str(tmp_path / "a"))
    with pytest.raises(ValueError, match="batch_size 30 does not divide over 4 device"):
        train_and_evaluate(
            smoke_config(data_dir, batch_size=30, parallel="shard_map"), str(tmp_path / "b")
        )
    with pytest.raises(ValueError, match="Unknown task 'segmentation'.*classification"):
        train_and_evaluate(smoke_config(data_dir, task="segmentation"), str(tmp_path / "c"))
    with pytest.raises(ValueError, match="Unknown parallel strategy 'dp'"):
        train_and_evaluate(smoke_config(data_dir, parallel="dp"), str(tmp_path / "d"))
    for name in "abcd":
        assert not os.path.exists(tmp_path / name / "checkpoints")
