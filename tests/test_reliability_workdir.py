"""The workdir stays inside itself and its files never block a resume: a lost
``config.json`` is refused unless the user opts in (then written again), a torn last
line of ``metrics.jsonl`` is dropped with one warning, a garbage JSON file is named,
and symbolic links are replaced or refused, never written through. Real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from configs import lenet5_digits
from convjax.runs import metrics as metrics_lib
from convjax.runs import workdir as workdir_lib
from convjax.runs.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def train(workdir: str, data_dir: str, *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, os.path.join(ROOT, "experiments", "train.py"),
        f"--config={os.path.join(ROOT, 'configs', 'lenet5_digits.py')}:smoke",
        f"--workdir={workdir}", "--config.parallel=jit", "--config.eval_every_steps=0", *extra,
    ]  # fmt: skip
    env = dict(os.environ, TFDS_DATA_DIR=data_dir)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)


def one_error_line(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr + run.stdout, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, run.stderr[-3000:]
    return errors[0]


def test_lost_config_json_and_torn_metrics_line(tmp_path, data_dir):
    workdir = str(tmp_path / "run")
    first = train(workdir, data_dir, "--config.num_train_steps=10")
    assert first.returncode == 0, first.stderr[-3000:]
    config_json = os.path.join(workdir, "config.json")
    os.remove(config_json)
    jsonl = os.path.join(workdir, "metrics.jsonl")
    with open(jsonl, "a") as f:
        f.write('{"step": 11, "split": "tr')  # what a kill during a write leaves
    changed = ("--config.num_train_steps=20", "--config.optimizer.learning_rate=0.01")
    refused = train(workdir, data_dir, *changed)
    line = one_error_line(refused)
    assert "has checkpoints but no config.json" in line and "--resume_with_changed_config" in line
    assert not os.path.exists(config_json)
    resumed = train(workdir, data_dir, *changed, "--resume_with_changed_config")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stdout and "at step 10" in resumed.stdout
    warnings = [line for line in resumed.stderr.splitlines() if "cut short" in line]
    assert len(warnings) == 1 and "metrics.jsonl" in warnings[0], resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    assert workdir_lib.load_config(workdir).optimizer.learning_rate == 0.01  # written again
    with open(jsonl) as f:
        records = [json.loads(line) for line in f]  # every line whole again
    assert max(r["step"] for r in records) == 20


def test_json_errors_name_the_file(tmp_path, caplog):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text('{"model": "lenet5", ')
    with pytest.raises(ValueError, match=r"run/config.json is not valid JSON"):
        workdir_lib.load_config(str(workdir))
    lines = ['{"step": 1, "split": "train", "loss": 2.0}', "garbage", '{"step": 2, "split": "tr']
    (workdir / "metrics.jsonl").write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"metrics.jsonl line 2 is not a metrics record"):
        metrics_lib.read_metrics(str(workdir))
    (workdir / "metrics.jsonl").write_text("\n".join(lines[:1] + lines[2:]))
    assert metrics_lib.read_metrics(str(workdir)) == [json.loads(lines[0])]


def test_links_in_the_workdir_are_never_written_through(tmp_path, data_dir):
    workdir, outside = str(tmp_path / "run"), tmp_path / "outside"
    first = train(workdir, data_dir, "--config.num_train_steps=10")
    assert first.returncode == 0, first.stderr[-3000:]
    outside.mkdir()
    # A step directory that is a link (to a copy of a real checkpoint, so it is kept until
    # pruning reaches it), and every file the run rewrites, linked to files outside.
    shutil.copytree(os.path.join(workdir, "checkpoints", "10"), outside / "step")
    os.symlink(outside / "step", os.path.join(workdir, "checkpoints", "1"))
    for name in ("metrics.csv", "training_curves.png", "metrics.jsonl", "config.json",
                 "results.json"):  # fmt: skip
        shutil.copy(os.path.join(workdir, name), outside / name)
        os.remove(os.path.join(workdir, name))
        os.symlink(outside / name, os.path.join(workdir, name))
    before = {p.name: p.read_bytes() for p in outside.iterdir() if p.is_file()}
    step_files = sorted(str(p.relative_to(outside)) for p in (outside / "step").rglob("*"))
    run = train(workdir, data_dir, "--config.num_train_steps=40", "--config.keep_checkpoints=2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Checkpoint step 1 is a symbolic link" in run.stderr
    assert {p.name: p.read_bytes() for p in outside.iterdir() if p.is_file()} == before
    assert sorted(str(p.relative_to(outside)) for p in (outside / "step").rglob("*")) == step_files
    assert os.path.islink(os.path.join(workdir, "checkpoints", "corrupt", "1-link"))
    for name in before:
        assert not os.path.islink(os.path.join(workdir, name)), name
    assert json.load(open(os.path.join(workdir, "results.json")))["step"] == 40
    # The lock file: refused in one line, the file it points to untouched.
    (outside / "lock").write_text("not a lock file\n")
    os.remove(os.path.join(workdir, "run.lock"))
    os.symlink(outside / "lock", os.path.join(workdir, "run.lock"))
    refused = train(workdir, data_dir, "--config.num_train_steps=40")
    assert "run.lock is a symbolic link" in one_error_line(refused)
    assert (outside / "lock").read_text() == "not a lock file\n"


def test_refused_keep_checkpoints_leaves_no_workdir(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
    config = lenet5_digits.get_config("smoke")
    config.keep_checkpoints = 0
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match="keep_checkpoints must be an integer >= 1"):
        train_and_evaluate(config, str(workdir))
    assert not workdir.exists()
