"""The workdir contract: config.json round trips, restore(workdir) alone, refusal of
an incompatible config."""

import glob
import importlib
import json
import os
import sys

import jax
import ml_collections
import numpy as np
import pytest

from convjax.data import pipeline
from convjax.runs import workdir as workdir_lib
from convjax.runs.train import train_and_evaluate
from convjax.tasks import get_task
from convjax.train import setup
from convjax.train.setup import build_model, config_kwargs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CONFIG_NAMES = sorted(
    os.path.basename(p)[:-3]
    for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
    if not os.path.basename(p).startswith(("_", "common"))
)


def _assert_same_types(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict, path=""):
    assert sorted(a.keys()) == sorted(b.keys()), path
    for key in a.keys():
        x, y = a[key], b[key]
        assert a.get_type(key) is b.get_type(key), f"{path}{key}: {a.get_type(key)}"
        if isinstance(x, ml_collections.ConfigDict):
            _assert_same_types(x, y, f"{path}{key}.")
        else:
            _assert_same_leaf(x, y, f"{path}{key}")


def _assert_same_leaf(x, y, path):
    assert type(x) is type(y), f"{path}: {type(x).__name__} != {type(y).__name__}"
    if isinstance(x, list | tuple):
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            _assert_same_leaf(u, v, f"{path}[{i}]")
    else:
        assert x == y or (x != x and y != y), f"{path}: {x!r} != {y!r}"


@pytest.mark.parametrize("name", CONFIG_NAMES)
@pytest.mark.parametrize("arg", [None, "smoke"])
def test_config_json_round_trip_is_exact(name, arg, tmp_path):
    config = importlib.import_module(f"configs.{name}").get_config(arg)
    workdir_lib.save_config(config, str(tmp_path))
    loaded = workdir_lib.load_config(str(tmp_path))
    assert loaded == config
    _assert_same_types(loaded, config)
    # What the drivers build from it.
    if config.get("task") is not None:
        task_kwargs = config_kwargs(loaded.get("task_kwargs"))
        if loaded.task == "transfer" and not task_kwargs.get("pretrained"):
            task_kwargs["allow_random_backbone"] = True  # refused without weights otherwise
        get_task(loaded.task, **task_kwargs)
    if config.get("model") is not None:
        assert build_model(loaded) == build_model(config)
    if config.get("dataset") is not None:
        assert pipeline.resolve_dataset_config(loaded.dataset) == pipeline.resolve_dataset_config(
            config.dataset
        )


def test_placeholders_stay_overridable_after_a_round_trip(tmp_path):
    config = importlib.import_module("configs.lenet5_digits").get_config("smoke")
    workdir_lib.save_config(config, str(tmp_path))
    loaded = workdir_lib.load_config(str(tmp_path))
    assert loaded.dataset.data_dir is None
    loaded.dataset.data_dir = "/data"  # a typed str placeholder
    with pytest.raises(TypeError):
        loaded.dataset.data_dir = 3


def test_load_config_of_a_missing_workdir_says_how_to_train(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json.*experiments/train.py"):
        workdir_lib.load_config(str(tmp_path / "nothing"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke run trained with an override that changes the parameter shapes."""
    config = importlib.import_module("configs.lenet5_digits").get_config("smoke")
    config.dataset.data_dir = str(tmp_path_factory.mktemp("tfds"))
    config.model_kwargs.batch_norm = True
    config.num_train_steps = 10
    config.checkpoint_every_steps = 5
    config.parallel = "jit"
    workdir = str(tmp_path_factory.mktemp("run"))
    metrics = train_and_evaluate(config, workdir)
    return config, workdir, metrics


def test_restore_from_the_workdir_alone(trained, monkeypatch):
    config, workdir, metrics = trained

    def no_init(*args, **kwargs):
        raise AssertionError("restore must not initialise the model")

    monkeypatch.setattr(setup, "init_train_state", no_init)
    restored = workdir_lib.restore(workdir)
    assert restored.step == 10
    assert restored.config.model_kwargs.batch_norm is True
    assert "batch_stats" in restored.variables
    # The restored model reproduces the run's final eval accuracy on its own.
    correct = count = 0
    for batch in pipeline.create_eval_iterator(restored.config.dataset, global_batch_size=128):
        logits = restored.model.apply(restored.variables, batch["image"], train=False)
        correct += float(np.sum((np.argmax(logits, -1) == batch["label"]) * batch["mask"]))
        count += float(np.sum(batch["mask"]))
    assert count == metrics["count"]
    assert correct / count == pytest.approx(metrics["accuracy"], abs=1e-6)
    saved = json.load(open(os.path.join(workdir, workdir_lib.RESULTS_JSON)))
    assert saved["eval"]["accuracy"] == pytest.approx(metrics["accuracy"])


def test_restore_an_earlier_step(trained):
    _, workdir, _ = trained
    early, late = workdir_lib.restore(workdir, step=5), workdir_lib.restore(workdir)
    assert (early.step, late.step) == (5, 10)
    assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(early.state.params))
    differs = jax.tree.map(
        lambda a, b: not np.array_equal(a, b), early.state.params, late.state.params
    )
    assert all(jax.tree.leaves(differs))


def test_incompatible_config_is_refused_with_the_differing_fields(trained):
    config, workdir, _ = trained
    other = config.copy_and_resolve_references()
    other.model_kwargs.batch_norm = False
    other.num_train_steps = 12
    with pytest.raises(ValueError, match=r"model_kwargs\.batch_norm: True -> False"):
        train_and_evaluate(other, workdir)
