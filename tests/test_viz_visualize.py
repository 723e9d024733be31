"""The visualisation driver end to end on LeNet-5 over the offline digits, and its errors."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from convjax.analysis.attributions import OCCLUSION_TITLE, attribution_figure
from convjax.analysis.mining import eval_batches
from convjax.analysis.network import zoo_dataset
from convjax.analysis.plan import first_layer_kernel, make_plan
from convjax.models.taps import extract_features
from convjax.runs import visualize as viz_run
from convjax.runs import workdir as workdirs
from convjax.viz.grids import filter_figure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def lenet():
    dataset = zoo_dataset("sklearn_digits", image_size=32, channels=1)
    return viz_run.network_from_zoo("lenet5", dataset=dataset, seed=1)


def test_visualize_writes_everything_and_mines_exactly(lenet, tmp_path):
    figures = viz_run.visualize(
        lenet,
        str(tmp_path),
        units="0-3",
        num_images=40,
        batch_size=8,
        strategy="jit",
        attribution_images=1,
        maximize_steps=0,  # the task's own test runs it
        log=lambda line: None,
    )
    assert figures["images_mined"] == 40
    assert tuple(figures["layers"]["conv2"]["receptive_field"]) == (14, 14)
    for name in figures["files"]:
        assert (tmp_path / name).stat().st_size > 0, name
    index = (tmp_path / "index.html").read_text()
    assert all(f'src="{name}"' in index for name in figures["files"] if name.endswith(".png"))
    for expected in (
        "topk_conv1.png",
        "filters.png",
        "attributions.png",
        "featuremaps_conv2.png",
    ):
        assert expected in figures["files"]

    # The saved top-9 equals sorting every response of the first 40 eval images.
    images = np.concatenate([b["image"] for b in eval_batches(lenet.dataset, 8, 40)])[:40]
    acts = jax.jit(lambda x: extract_features(lenet.model, lenet.variables, x, ["conv2"]))(images)
    act = np.asarray(acts["conv2"])
    best = act.max(axis=(1, 2))  # [N, U]
    saved = np.load(tmp_path / "topk.npz")
    for unit in range(act.shape[-1]):
        order = np.lexsort((np.arange(40), -best[:, unit]))[:9]
        np.testing.assert_array_equal(saved["conv2/index"][unit], order)
        np.testing.assert_array_equal(saved["conv2/value"][unit], best[order, unit])
        y, x = saved["conv2/y"][unit], saved["conv2/x"][unit]
        np.testing.assert_array_equal(act[order, y, x, unit], best[order, unit])


def test_filters_are_labelled_and_scaled_up(lenet, tmp_path):
    """LeNet-5's first layer, 6 filters 5x5: each numbered in a cell of ~100 px."""
    kernel = first_layer_kernel(lenet, (1, 32, 32, 1))
    assert kernel.shape == (5, 5, 1, 6)
    figure = filter_figure(kernel, "conv1")
    shown = [ax for ax in figure.axes if ax.images]
    assert [ax.get_title() for ax in shown] == [str(i) for i in range(6)]
    for ax, i in zip(shown, range(6), strict=True):  # each cell is its own filter, 0..1
        f = kernel[..., 0, i]
        want = (f - f.min()) / (f.max() - f.min())
        np.testing.assert_allclose(ax.images[0].get_array(), want, rtol=1e-5)
    viz_run.visualize(
        lenet, str(tmp_path), layers=["conv1"], units="0-1", num_images=8, batch_size=8,
        strategy="jit", attribution_images=0, log=lambda line: None,
    )  # fmt: skip
    width, height = Image.open(tmp_path / "filters.png").size
    assert width >= 3 * 90 and height >= 2 * 90, (width, height)


def test_occlusion_maps_have_a_colour_scale(lenet):
    plan = make_plan(lenet, ["conv1", "conv2"], "0-1")
    images = next(eval_batches(lenet.dataset, 8))["image"][:2]
    figure = attribution_figure(lenet, plan, images, "conv2")
    bars = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2  # one per row
    titles = [ax.get_title() for ax in figure.axes]
    assert OCCLUSION_TITLE in titles
    occlusion = [ax for ax in figure.axes if ax.get_title() == OCCLUSION_TITLE][0]
    low, high = occlusion.images[0].get_clim()
    bar_low, bar_high = bars[0].get_ylim()
    assert (bar_low, bar_high) == pytest.approx((low, high))


def test_bad_layers_and_units(lenet):
    with pytest.raises(
        ValueError, match=r"Unknown layer\(s\) \['conv9'\]; valid taps: conv1, conv2"
    ):
        make_plan(lenet, ["conv9"])
    with pytest.raises(ValueError, match=r"\['fc1'\] have no spatial axes.*conv1, conv2"):
        make_plan(lenet, ["conv1", "fc1"])
    with pytest.raises(ValueError, match="out of range for conv1"):
        make_plan(lenet, ["conv1"], "0-6")
    with pytest.raises(ValueError, match="'all' or ranges"):
        make_plan(lenet, ["conv1"], "first")


def test_workdir_without_checkpoint(tmp_path):
    from configs import lenet5_digits

    workdirs.save_config(lenet5_digits.get_config("smoke"), str(tmp_path))
    with pytest.raises(ValueError, match="(?s)No checkpoint in .*train first.*--model=vgg16"):
        viz_run.network_from_workdir(str(tmp_path))


def test_script_errors_without_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "experiments", "visualize.py"),
            f"--workdir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [
        line for line in result.stderr.splitlines() if "config.json" in line or "--model" in line
    ]
    assert lines[0].startswith("error: ") and "config.json not found" in lines[0]
    assert "python experiments/train.py" in lines[0] and "--model=vgg16" in lines[1]


def test_a_workdir_on_image_files_without_its_dataset(tmp_path):
    """A trained workdir with its tfds data directory renamed away: visualize.py mines
    the given PNGs (the eval preprocessing: 0..255 -> [-1, 1]) and touches no dataset;
    without --images it says in one line which dataset is missing and how to build it."""
    from sklearn.datasets import load_digits

    from configs import lenet5_digits
    from convjax.data.sklearn_digits import upsample_digit
    from convjax.runs.train import train_and_evaluate

    data_dir = str(tmp_path / "tfds")
    config = lenet5_digits.get_config("smoke")
    config.dataset.data_dir = data_dir
    config.parallel = "jit"
    config.num_train_steps = 4
    workdir = str(tmp_path / "work")
    train_and_evaluate(config, workdir)
    os.rename(data_dir, data_dir + ".away")

    folder = tmp_path / "digits"
    folder.mkdir()
    pixels = np.stack([upsample_digit(grid) for grid in load_digits().images[:5]])  # [5,32,32,1]
    for i, image in enumerate(pixels):
        Image.fromarray(image[..., 0], mode="L").save(folder / f"digit{i}.png")
    out = tmp_path / "pictures"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "experiments", "visualize.py"),
            f"--workdir={workdir}",
            f"--images={folder}/*.png",
            f"--out={out}",
            "--units=0-3",
            "--batch_size=4",
            "--strategy=jit",
            "--attribution_images=2",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not os.path.exists(data_dir)  # nothing was rebuilt
    figures = json.loads((out / "visualize.json").read_text())
    assert figures["images_mined"] == 5
    for name in ("topk_conv1.png", "topk_conv2.png", "featuremaps_conv1.png", "attributions.png"):
        assert name in figures["files"] and (out / name).stat().st_size > 0, name

    # The top-5 of conv1 equals sorting the responses to the PNGs normalised by hand.
    restored = workdirs.restore(workdir)
    assert tuple(config.dataset.mean) == (0.5,) and tuple(config.dataset.std) == (0.5,)
    inputs = (pixels.astype(np.float32) / 255.0 - 0.5) / 0.5
    act = np.asarray(
        extract_features(restored.model, restored.variables, inputs, ["conv1"])["conv1"]
    )
    best = act.max(axis=(1, 2))  # [5, U]
    saved = np.load(out / "topk.npz")
    for unit in range(act.shape[-1]):
        order = np.lexsort((np.arange(5), -best[:, unit]))
        np.testing.assert_array_equal(saved["conv1/index"][unit][:5], order)
        np.testing.assert_allclose(saved["conv1/value"][unit][:5], best[order, unit], rtol=1e-5)

    with pytest.raises(workdirs.DatasetMissingError) as missing:
        viz_run.network_from_workdir(workdir)
    message = str(missing.value)
    assert "\n" not in message and "'sklearn_digits'" in message
    assert "experiments/prepare_data.py --datasets=sklearn_digits" in message
    assert "--images=" in message
    assert not os.path.exists(data_dir)
