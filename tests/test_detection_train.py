"""Detection through the generic train step: strategies agree; the smoke run trains with
an override, then evaluates (mAP, PNGs) and draws detections on image files from the
workdir alone (experiments/detect.py included)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from configs import yolo_shapes
from convjax.models import get_model
from convjax.runs import workdir as workdir_lib
from convjax.runs.detect import (
    METRICS_JSON,
    PR_PNG,
    SAMPLES_PNG,
    detect_images,
    evaluate_workdir,
)
from convjax.runs.inference import inference_dataset_config, model_inputs
from convjax.runs.metrics import curves_figure, read_metrics
from convjax.runs.train import train_and_evaluate
from convjax.tasks import get_task
from convjax.train.parallel import get_strategy
from convjax.train.state import TrainState

ANCHORS = ((0.25, 0.25), (0.5, 0.5))


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def detection_batches(rng, count=2, batch=8, size=16):
    batches = []
    for _ in range(count):
        yx = rng.uniform(0, 0.5, (batch, 3, 2))
        boxes = np.concatenate([yx, yx + rng.uniform(0.2, 0.5, (batch, 3, 2))], -1)
        batches.append(
            {
                "image": rng.random((batch, size, size, 3)).astype(np.float32),
                "boxes": boxes.astype(np.float32),
                "classes": rng.integers(0, 3, (batch, 3)).astype(np.int32),
                "box_mask": (rng.random((batch, 3)) < 0.7).astype(np.float32),
            }
        )
    return batches


def run_strategy(name, batches):
    strategy = get_strategy(name)
    model = get_model(
        "yolo", widths=(4, 8), pools=2, head_width=8, num_anchors=2, axis_name=strategy.axis_name
    )
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
    params = variables.pop("params")
    state = strategy.put_state(
        TrainState.create(
            params=params, model_state=variables, tx=optax.sgd(0.01), rng=jax.random.PRNGKey(1)
        )
    )
    task = get_task("detection", anchors=ANCHORS)
    step = strategy.compile_train_step(task.loss_fn(model))
    losses = []
    for batch in batches:
        state, metrics = step(state, strategy.put_batch(batch))
        losses.append(strategy.get_metrics(metrics)["loss"])
    return np.array(losses), strategy.get_state(state)


def test_detection_task_runs_under_every_strategy():
    batches = detection_batches(np.random.default_rng(0))
    ref_losses, ref_state = run_strategy("jit", batches)
    assert np.all(np.isfinite(ref_losses)) and ref_losses[1] != ref_losses[0]
    for name in ("pmap", "shard_map"):
        losses, state = run_strategy(name, batches)
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
        for a, b in zip(
            jax.tree.leaves(ref_state.params), jax.tree.leaves(state.params), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tensorboard_steps(workdir: str) -> dict[str, list[int]]:
    """TensorBoard tag -> the steps it was written at, read from the event files."""
    from tensorflow.core.util import event_pb2

    steps: dict[str, list[int]] = {}
    for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "*tfevents*"))):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


def check_detect_streams_folders(workdir, tmp_path, image_path):
    """Same-named files in two folders give two outputs; a bad file is skipped with a
    warning; at most one batch of images is held at a time."""
    import shutil

    import convjax.runs.detect as detect_lib

    for folder in ("a", "b", "b/c"):
        os.makedirs(tmp_path / "photos" / folder)
    for i, folder in enumerate(("a", "b", "b/c")):
        shutil.copy(image_path, tmp_path / "photos" / folder / "x.png")
        shutil.copy(image_path, tmp_path / "photos" / folder / f"y{i}.png")
    (tmp_path / "photos" / "b" / "broken.png").write_bytes(b"")
    paths = sorted(str(p) for p in (tmp_path / "photos").rglob("*.png"))
    held, most = [0], [0]
    read, save = detect_lib.read_image, detect_lib.save_png

    def counting_read(path):
        held[0] += 1
        most[0] = max(most[0], held[0])
        return read(path)

    def counting_save(image, path):
        held[0] -= 1
        return save(image, path)

    out = str(tmp_path / "drawn")
    detect_lib.read_image, detect_lib.save_png = counting_read, counting_save
    try:
        written = detect_images(workdir, paths, output_dir=out, batch_size=2)
    finally:
        detect_lib.read_image, detect_lib.save_png = read, save
    names = sorted(os.path.relpath(p, out) for p in written)
    assert names == ["a/x.png", "a/y0.png", "b/c/x.png", "b/c/y2.png", "b/x.png", "b/y1.png"]
    assert most[0] <= 2 + 1  # one batch (+1: the broken file, never saved), not all seven
    with pytest.raises(ValueError, match="would both be drawn as a/x.png"):
        detect_images(workdir, [*paths, str(tmp_path / "photos" / "a" / "x.jpg")])


def test_smoke_training_with_override_then_detect_from_the_workdir_alone(tmp_path):
    data_dir = str(tmp_path / "tfds")
    tfds.builder("shapes/scenes_small", data_dir=data_dir).download_and_prepare()
    config = yolo_shapes.get_config("smoke")
    config.dataset.data_dir = data_dir
    config.parallel = "jit"
    config.model_kwargs.widths = (4, 8, 12, 12)  # not the smoke default (4, 8, 8, 16)
    config.evals.map.every_steps = 2  # mAP at steps 2, 4 and 6
    workdir = str(tmp_path / "work")
    eval_metrics = train_and_evaluate(config, workdir)
    assert np.isfinite(eval_metrics["loss"]) and eval_metrics["count"] == 32
    # mAP and COCO AP during training: metrics.jsonl, TensorBoard, the curves figure.
    logged = [r for r in read_metrics(workdir) if r["split"] == "map"]
    assert [r["step"] for r in logged] == [2, 4, 6]
    assert all(0 <= r["map50_voc"] <= 1 and -1 <= r["coco_AP"] <= 1 for r in logged)
    tags = tensorboard_steps(workdir)
    assert tags["map/map50_voc"] == tags["map/coco_AP"] == [2, 4, 6]
    panels = {ax.get_title(): ax for ax in curves_figure(read_metrics(workdir)).axes}
    for name in ("map50_voc", "coco_AP"):
        (line,) = [ln for ln in panels[name].get_lines() if ln.get_label() == "map"]
        assert list(line.get_xdata()) == [2, 4, 6]
    # The evaluate verb runs the same evaluator on the restored last checkpoint: the
    # figures equal the run's last ones exactly.
    metrics = evaluate_workdir(workdir, num_samples=4)  # model rebuilt from config.json
    for key in ("map50_voc", "map50_voc07", "coco_AP", "coco_AP50", "coco_AP75"):
        assert metrics[key] == logged[-1][key] == eval_metrics[f"map/{key}"]
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f)["map"] == metrics  # breakdown (per class, per size) included
    with open(os.path.join(workdir, METRICS_JSON)) as f:
        assert json.load(f)["map50_voc"] == metrics["map50_voc"]
    for name in (SAMPLES_PNG, PR_PNG):
        picture = np.asarray(Image.open(os.path.join(workdir, name)))
        assert picture.ndim == 3 and picture.std() > 0
    image_path = str(tmp_path / "scene.png")
    Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)).save(
        image_path
    )
    # A 50 x 70 file reaches the model as the eval split's 64 x 64 inputs: the dataset's
    # resize (bilinear, antialiased, rounded to uint8) and normalisation, from tf directly.
    pixels = np.asarray(Image.open(image_path))
    resized = tf.image.resize(pixels, (64, 64), method="bilinear", antialias=True)
    want = (np.round(np.clip(resized.numpy(), 0, 255)) / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(model_inputs([image_path], config.dataset)[0], want, atol=1e-5)
    assert inference_dataset_config(config.dataset).image_size == (64, 64)
    (written,) = detect_images(workdir, [image_path], min_score=0.0)
    assert np.asarray(Image.open(written)).shape[:2] == (150, 210)  # scaled 3x, aspect kept
    check_detect_streams_folders(workdir, tmp_path, image_path)
    stale = yolo_shapes.get_config("smoke")  # the training override forgotten
    stale.dataset.data_dir = data_dir
    with pytest.raises(ValueError, match=r"widths: \(4, 8, 12, 12\) -> \(4, 8, 8, 16\)"):
        evaluate_workdir(workdir, config=stale)
    # The workdir alone, with the dataset gone: restore and detection on files work; an
    # evaluation says which dataset is missing and how to build it.
    os.rename(data_dir, data_dir + ".away")
    restored = workdir_lib.restore(workdir)
    assert restored.image_shape == (64, 64, 3) and restored.step == 6
    assert restored.class_names == ["circle", "square", "triangle"]
    with pytest.raises(workdir_lib.DatasetMissingError, match=r"'shapes/scenes_small'.*"
                       r"prepare_data.py --datasets=shapes/scenes_small"):  # fmt: skip
        evaluate_workdir(workdir)
    assert not os.path.exists(data_dir)  # nothing was rebuilt
    # The script, as a user runs it: the workdir alone, no override repeated.
    out = subprocess.run(
        [sys.executable, "experiments/detect.py", f"--workdir={workdir}", f"--images={image_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "map50_voc=" not in out.stdout  # --images only draws: no evaluation first
    assert "wrote " + os.path.join(workdir, "detections", "scene.png") in out.stdout
    written = np.asarray(Image.open(os.path.join(workdir, "detections", "scene.png")))
    assert written.shape[:2] == (150, 210)  # scaled 3x, aspect kept
    assert not os.path.exists(data_dir)


def test_workdir_info_records_what_inference_needs(tmp_path):
    data_dir = str(tmp_path / "tfds")
    config = yolo_shapes.get_config("smoke")
    config.dataset.data_dir = data_dir
    config.parallel = "jit"
    config.num_train_steps = config.checkpoint_every_steps = 1
    config.evals = {"eval": {"type": "task"}}
    workdir = str(tmp_path / "work")
    train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, workdir_lib.WORKDIR_INFO_JSON)) as f:
        info = json.load(f)
    restored = workdir_lib.restore(workdir)
    builder = tfds.builder("shapes/scenes_small", data_dir=data_dir)
    assert info["input_shape"] == [64, 64, 3]
    assert info["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert info["classes"] == {"count": 3, "names": ["circle", "square", "triangle"]}
    assert info["dataset"]["name"] == "shapes/scenes_small"
    assert info["dataset"]["version"] == str(builder.info.version)
    assert info["dataset"]["splits"] == {k: v.num_examples for k, v in builder.info.splits.items()}
    assert info["versions"]["jax"] == jax.__version__
    assert info["parameters"] == sum(x.size for x in jax.tree.leaves(restored.state.params))


@pytest.mark.parametrize("name", ["yolo_voc", "yolo_coco", "yolo_shapes"])
def test_yolo_configs_agree_with_their_models(name):
    import importlib

    config = importlib.import_module(f"configs.{name}").get_config()
    task = get_task(config.task, **config.task_kwargs)
    model = get_model(config.model, **config.model_kwargs)
    size = config.dataset.image_size or (64, 64)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *size, 3))))
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, *size, 3))), shapes)
    grid = size[0] // 2**config.model_kwargs.pools
    assert out.shape == (1, grid, grid, len(task.anchors), 5 + config.model_kwargs.num_classes)
    with pytest.raises(ValueError, match=r"\['tiny'\]; valid: smoke"):
        importlib.import_module(f"configs.{name}").get_config("tiny")


@pytest.mark.parametrize("variant, shape", [(None, (1, 8)), ("landmarks", (1, 5, 2))])
def test_localization_configs_agree_with_their_models(variant, shape):
    from configs import localization_shapes

    config = localization_shapes.get_config(variant)
    get_task(config.task, **config.task_kwargs)
    model = get_model(config.model, **config.model_kwargs)
    x = jnp.zeros((1, 64, 64, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    assert jax.eval_shape(lambda v: model.apply(v, x), variables).shape == shape
    with pytest.raises(ValueError, match=r"\['tiny'\]; valid: smoke, landmarks"):
        localization_shapes.get_config("tiny")
