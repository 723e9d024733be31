"""The plain-vs-residual sweep's pieces: per-net configs and the figure (the full sweep
runs as `experiments/plain_vs_residual.py --config=configs/plain_vs_residual.py:smoke`)."""

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
