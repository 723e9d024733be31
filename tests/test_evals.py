"""Evaluators from the config and the checks before compiling: config.evals specs are
checked in one line; a model with fewer outputs than the dataset's classes is refused
before anything compiles; labels outside [0, num_classes) are refused, never zero
targets; a workdir without workdir_info.json still restores (with a note)."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from configs import lenet5_digits
from convjax.evals import EvalContext, build_evaluator
from convjax.models.pretrained import load_pretrained
from convjax.runs import workdir as workdir_lib
from convjax.runs.train import check_num_classes, train_and_evaluate
from convjax.tasks import get_task
from convjax.tasks.base import checked_labels
from convjax.train.parallel import get_strategy
from convjax.train.setup import build_model


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def smoke_config(data_dir, **overrides):
    config = lenet5_digits.get_config("smoke")
    config.dataset.data_dir = data_dir
    config.parallel = "jit"
    config.update(overrides)
    return config


def test_fewer_outputs_than_classes_is_refused_before_compiling(data_dir, tmp_path, monkeypatch):
    config = smoke_config(data_dir)
    config.model_kwargs.num_classes = 7  # the digits have 10

    def no_compile(*args, **kwargs):
        raise AssertionError("nothing may compile for a refused config")

    monkeypatch.setattr("convjax.train.parallel.JitStrategy.compile_train_step", no_compile)
    with pytest.raises(ValueError) as error:
        train_and_evaluate(config, str(tmp_path / "work"))
    message = str(error.value)
    assert "\n" not in message
    assert "num_classes is 7" in message and "'sklearn_digits' has 10 classes" in message
    assert not os.path.exists(os.path.join(tmp_path, "work", "checkpoints"))


def test_more_outputs_than_classes_is_allowed_with_a_note(data_dir, capsys):
    config = smoke_config(data_dir)
    config.model_kwargs.num_classes = 12
    assert check_num_classes(config, 10) == 12
    assert "12 outputs for the 10 classes" in capsys.readouterr().out
    assert check_num_classes(config, None) == 12  # a dataset without a class count


def test_out_of_range_labels_in_a_hand_made_batch_are_refused():
    task = get_task("classification")
    batch = {"label": np.array([0, 3, 10, 9], np.int32)}
    with pytest.raises(ValueError, match=r"labels \[10\] outside \[0, 10\)"):
        task.check_labels(batch, 10)
    with pytest.raises(ValueError, match=r"labels \[-1\] outside"):
        task.check_labels({"label": np.array([-1, 2])}, 10)
    task.check_labels({"label": np.array([0, 9])}, 10)  # in range: no error
    padded = {"label": np.array([2, 99]), "mask": np.array([1.0, 0.0])}
    task.check_labels(padded, 10)  # padding is not a label
    batches = checked_labels(iter([{"label": np.array([1])}, batch]), task, 10)
    assert next(batches)["label"].tolist() == [1]
    with pytest.raises(ValueError, match="outside"):
        next(batches)
    # Detection: the classes of real boxes.
    detection = get_task("detection")
    boxes = {"classes": np.array([[0, 5]]), "box_mask": np.array([[1.0, 0.0]])}
    detection.check_labels(boxes, 3)
    boxes["box_mask"][0, 1] = 1.0
    with pytest.raises(ValueError, match=r"box classes \[5\] outside \[0, 3\)"):
        detection.check_labels(boxes, 3)
    # A transfer task checks as its base task.
    transfer = get_task("transfer", allow_random_backbone=True)
    with pytest.raises(ValueError, match="outside"):
        transfer.check_labels(batch, 10)


def test_eval_specs_are_checked_in_one_line(data_dir):
    config = smoke_config(data_dir)
    context = EvalContext(
        config, build_model(config), get_task("classification"), get_strategy("jit"), 120
    )
    with pytest.raises(
        ValueError,
        match=r"evals.x.type 'mAP'.*valid: detection, linear_probe, one_shot, task, verification",
    ):
        build_evaluator("x", {"type": "mAP"}, context)
    with pytest.raises(ValueError, match=r"unknown fields \['cadence'\]; valid: type, split"):
        build_evaluator("x", {"type": "task", "cadence": 3}, context)
    with pytest.raises(ValueError, match=r"options \['k'\] unknown.*valid: none"):
        build_evaluator("x", {"type": "task", "options": {"k": 1}}, context)
    with pytest.raises(ValueError, match="type 'detection' needs task 'detection'"):
        build_evaluator("x", {"type": "detection"}, context)
    with pytest.raises(ValueError, match="needs a task that embeds images"):
        build_evaluator("x", {"type": "one_shot"}, context)
    with pytest.raises(ValueError, match=r"evals.x.dataset.nme is not a dataset field"):
        build_evaluator("x", {"type": "task", "dataset": {"nme": "mnist"}}, context)
    held_out = build_evaluator("x", {"type": "task", "split": "train", "every_steps": 3}, context)
    assert held_out.split == "train" and held_out.every_steps == 3
    assert [s for s in range(1, 8) if held_out.due(s, 7)] == [3, 6, 7]
    default = build_evaluator("eval", {"type": "task"}, context)
    assert default.split == "test" and default.every_steps == config.eval_every_steps


def test_a_run_with_two_evaluators_and_an_older_workdir(data_dir, tmp_path, capsys):
    config = smoke_config(data_dir, num_train_steps=4, eval_every_steps=2)
    config.evals.train_fit = {"type": "task", "split": "train", "every_steps": 4}
    config.evals.probe = {
        "type": "linear_probe",
        "every_steps": 0,
        "options": {"epochs": 20, "head": "logits"},
    }
    workdir = str(tmp_path / "work")
    metrics = train_and_evaluate(config, workdir)
    # A linear head on the penultimate features of 1,438 training digits: far above the
    # 10 % of chance even after 4 steps (LeNet's features are already separable).
    assert 0.5 < metrics["probe/accuracy"] <= 1 and np.isfinite(metrics["probe/loss"])
    out = capsys.readouterr().out
    assert "eval at step 2 on 359 examples: accuracy=" in out  # the 20% test split
    assert "train_fit at step 4 on 1,438 examples: accuracy=" in out
    assert metrics["count"] == 359 and metrics["train_fit/count"] == 1438
    # With the dataset renamed away: restore, and loading the weights for transfer.
    os.rename(data_dir, data_dir + ".away")
    try:
        restored = workdir_lib.restore(workdir)
        assert restored.image_shape == (32, 32, 1) and restored.step == 4
        fresh = restored.model.init(jax.random.PRNGKey(1), np.zeros((1, 32, 32, 1)))
        loaded = load_pretrained(restored.model, fresh, workdir, exclude=("^logits/",))
        np.testing.assert_array_equal(
            loaded["params"]["conv1"]["kernel"], restored.state.params["conv1"]["kernel"]
        )
        assert not os.path.exists(data_dir)
    finally:
        os.rename(data_dir + ".away", data_dir)
    # A workdir from before workdir_info.json: restore reads the dataset, with a note.
    os.remove(os.path.join(workdir, workdir_lib.WORKDIR_INFO_JSON))
    restored = workdir_lib.restore(workdir)
    assert restored.image_shape == (32, 32, 1) and restored.info is None
    assert "has no workdir_info.json" in capsys.readouterr().out
