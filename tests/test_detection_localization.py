"""Classification with localization and landmarks: losses against numpy, tasks end to end."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.losses import localization as loc
from convjax.models import get_model
from convjax.tasks import get_task
from convjax.tasks.localization import course_box, course_box_to_xyxy


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    """Compile time dominates these small cases."""
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


localization_loss = jax.jit(loc.localization_loss, static_argnames="box_weight")
landmark_loss = jax.jit(loc.landmark_loss)


def np_localization(outputs, present, box, label, box_weight):
    p = 1 / (1 + np.exp(-outputs[:, 0]))
    obj = -(present * np.log(p) + (1 - present) * np.log(1 - p))
    box_term = box_weight * present * ((outputs[:, 1:5] - box) ** 2).sum(1)
    logits = outputs[:, 5:]
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    cls = -present * log_softmax[np.arange(len(label)), label]
    return obj + box_term + cls


def test_localization_loss_matches_numpy_and_ignores_box_without_object():
    rng = np.random.default_rng(0)
    outputs = rng.normal(size=(6, 8)).astype(np.float32)
    present = np.array([1, 0, 1, 0, 1, 1], np.float32)
    box = rng.random((6, 4)).astype(np.float32)
    label = rng.integers(0, 3, 6)
    terms = localization_loss(
        jnp.asarray(outputs),
        jnp.asarray(present),
        jnp.asarray(box),
        jnp.asarray(label),
        box_weight=2.0,
    )
    np.testing.assert_allclose(
        terms["loss"], np_localization(outputs, present, box, label, 2.0), rtol=1e-5
    )
    grads = jax.grad(
        lambda o: localization_loss(o, jnp.asarray(present), jnp.asarray(box), jnp.asarray(label))[
            "loss"
        ].sum()
    )(jnp.asarray(outputs))
    # Without an object only p_c learns: box and class outputs get no gradient.
    assert np.all(np.asarray(grads)[present == 0, 1:] == 0)
    assert np.all(np.asarray(grads)[present == 1, 1:] != 0)


def test_landmark_loss_matches_numpy():
    rng = np.random.default_rng(1)
    pred, target = rng.random((2, 3, 5, 2)).astype(np.float32)
    visible = np.array([[1, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    got = landmark_loss(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(visible))
    sq = ((pred - target) ** 2).sum(-1)
    expected = [(sq[i] * visible[i]).sum() / max(visible[i].sum(), 1) for i in range(3)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[B, K, 2\]"):
        landmark_loss(jnp.zeros((2, 5)), jnp.zeros((2, 5)))


def test_course_box_round_trip():
    yxyx = jnp.array([[0.2, 0.1, 0.6, 0.5]])
    np.testing.assert_allclose(course_box(yxyx), [[0.3, 0.4, 0.4, 0.4]], atol=1e-7)
    np.testing.assert_allclose(
        course_box_to_xyxy(course_box(yxyx)), [[0.1, 0.2, 0.5, 0.6]], atol=1e-7
    )


def single_object_batch(rng, batch=4, size=32):
    boxes = np.zeros((batch, 2, 4), np.float32)
    boxes[:, 0] = [0.2, 0.3, 0.6, 0.7]
    return {
        "image": rng.random((batch, size, size, 3)).astype(np.float32),
        "boxes": boxes,
        "classes": np.array([[1, 0]] * batch, np.int32),
        "box_mask": np.array([[1, 0], [0, 0], [1, 0], [1, 0]], np.float32)[:batch],
        "landmarks": rng.random((batch, 2, 5, 2)).astype(np.float32),
        "mask": np.array([1, 1, 1, 0], np.float32)[:batch],
    }


@pytest.mark.parametrize(
    "task_name, model_name", [("localization", "localization_net"), ("landmarks", "landmark_net")]
)
def test_tasks_step_and_eval(task_name, model_name):
    rng = np.random.default_rng(2)
    batch = jax.tree.map(jnp.asarray, single_object_batch(rng))
    model = get_model(model_name, widths=(4, 8), pools=2, num_classes=3)
    variables = model.init(jax.random.PRNGKey(0), batch["image"][:1])
    params, state = variables["params"], {"batch_stats": variables["batch_stats"]}
    task = get_task(task_name)
    loss_fn = jax.jit(task.loss_fn(model))
    (loss, (metrics, new_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, state, batch, jax.random.PRNGKey(1)
    )
    assert np.isfinite(float(loss)) and set(new_state) == {"batch_stats"}
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    sums = jax.jit(task.eval_fn(model))(params, state, batch)
    assert float(sums["count"]) == 3.0
    if task_name == "localization":
        assert 0 <= float(sums["accuracy"]) <= 3 and float(sums["object_rate"]) == 2.0
    else:
        assert float(sums["object_rate"]) == 2.0 and float(sums["distance_x_object"]) > 0
