"""The plain-vs-residual sweep's pieces: per-net configs and the figure (the full sweep
runs as `experiments/plain_vs_residual.py --config=configs/plain_vs_residual.py:smoke`)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import plain_vs_residual as sweep_config
from convjax.runs import sweeps
from convjax.runs.images import save_figure
from convjax.train.setup import build_model


def test_net_config_sets_depth_model_and_training_split():
    config = sweep_config.get_config("digits")
    config.lock()  # as --config flags hand it over
    plain = sweeps.net_config(config, 20, residual=False)
    res = sweeps.net_config(config, 56, residual=True)
    assert (plain.model, tuple(plain.model_kwargs.stage_sizes)) == ("plain20", (3, 3, 3))
    assert (res.model, tuple(res.model_kwargs.stage_sizes)) == ("resnet20", (9, 9, 9))
    assert plain.dataset.eval_split == config.train_error_split
    assert config.model_kwargs.get("stage_sizes") is None  # the sweep config is untouched
    assert build_model(res).stage_sizes == (9, 9, 9)
    with pytest.raises(ValueError, match="6n \\+ 2 layers; got depth 21"):
        sweeps.net_config(config, 21, residual=True)


def test_sweep_figure_draws_one_point_per_net(tmp_path):
    results = {
        "plain": {8: {"train_error": 0.5}, 20: {"train_error": 0.6}},
        "resnet": {8: {"train_error": 0.4}, 20: {"train_error": 0.3}},
    }
    fig = sweeps.sweep_figure(results, "title")
    lines = fig.axes[0].get_lines()
    np.testing.assert_allclose(lines[0].get_xydata(), [[8, 50.0], [20, 60.0]])
    np.testing.assert_allclose(lines[1].get_xydata(), [[8, 40.0], [20, 30.0]])
    path = save_figure(fig, tmp_path / "sweep.png")
    with Image.open(path) as png:
        assert png.size[0] > 300


def test_the_script_says_where_its_figure_and_results_went(tmp_path):
    """The smoke sweep (plain-8 and ResNet-8, one step each) through the script: its last
    lines name the figure and the JSON, and both files are there."""
    root = pathlib.Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    workdir = tmp_path / "sweep"
    command = [
        sys.executable, "experiments/plain_vs_residual.py",
        "--config=configs/plain_vs_residual.py:smoke", f"--workdir={workdir}",
        "--config.num_train_steps=1", "--config.log_every_steps=1",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-2:] == [
        f"figure: {workdir / sweeps.SWEEP_PNG}",
        f"results: {workdir / sweeps.SWEEP_JSON}",
    ]
    assert (workdir / sweeps.SWEEP_PNG).stat().st_size > 0
    assert set(json.loads((workdir / sweeps.SWEEP_JSON).read_text())) == {"plain", "resnet"}
