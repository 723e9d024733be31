"""Transfer learning: frozen backbones (params and BatchNorm statistics), new heads,
per-group learning rates, pretrained weights from real orbax checkpoints, features once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from convjax.evals.linear_probe import fit_head
from convjax.models.pretrained import load_pretrained
from convjax.models.resnet import ResNet
from convjax.models.taps import extract_features
from convjax.models.transfer import (
    BACKBONE,
    compute_head_inputs,
    flat_paths,
    frozen_batch_norm,
)
from convjax.tasks import get_task
from convjax.tasks.transfer import TransferTask, label_params
from convjax.train.checkpointing import Checkpointer
from convjax.train.optimizers import make_optimizer
from convjax.train.state import TrainState
from convjax.train.step import make_train_step


@pytest.fixture(autouse=True, scope="module")
def fast_compile():
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def tiny_resnet(num_classes=3):
    return ResNet(stage_sizes=(1, 1), stage_widths=(4, 8), stem="cifar", num_classes=num_classes)


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    images = (data.images[..., None] / 16.0).astype(np.float32)  # [1797, 8, 8, 1]
    return images, data.target.astype(np.int32)


def init(model, seed=0):
    variables = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 8, 8, 1)))
    return jax.tree.map(np.asarray, variables)


def run_steps(task, model, variables, batch, optimizer, steps=3):
    variables = dict(variables)
    params = variables.pop("params")
    tx = task.make_optimizer(optimizer, 100, make_optimizer)
    state = TrainState.create(
        params=params, model_state=variables, tx=tx, rng=jax.random.PRNGKey(0)
    )
    step = jax.jit(make_train_step(task.loss_fn(model)))
    for _ in range(steps):
        state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    return jax.tree.map(np.asarray, state.params), jax.tree.map(np.asarray, state.model_state)


def diff_paths(a, b):
    fa, fb = flat_paths(a), flat_paths(b)
    return {p for p in fa if not np.array_equal(fa[p], fb[p])}


ADAMW = {"name": "adamw", "learning_rate": 1e-2, "weight_decay": 0.1}


def test_frozen_backbone_changes_only_the_head_and_keeps_batchnorm_stats(digits):
    images, labels = digits
    batch = {"image": images[:16], "label": labels[:16] % 3}
    model = tiny_resnet()
    variables = init(model)
    frozen = TransferTask(get_task("classification"), freeze=(BACKBONE,))
    params, state = run_steps(frozen, model, variables, batch, ADAMW)
    assert diff_paths(params, variables["params"]) == {"head/kernel", "head/bias"}
    assert diff_paths(state["batch_stats"], variables["batch_stats"]) == set()
    # Control: without freezing, AdamW with weight decay moves everything, stats included.
    free = TransferTask(get_task("classification"))
    params, state = run_steps(free, model, variables, batch, ADAMW)
    assert len(diff_paths(params, variables["params"])) == len(flat_paths(params))
    assert len(diff_paths(state["batch_stats"], variables["batch_stats"])) == len(
        flat_paths(state["batch_stats"])
    )


def test_partial_freeze_by_path(digits):
    images, labels = digits
    batch = {"image": images[:16], "label": labels[:16] % 3}
    model = tiny_resnet()
    variables = init(model)
    task = TransferTask(get_task("classification"), freeze=("^(conv1|bn1|stage1)/",))
    params, state = run_steps(task, model, variables, batch, ADAMW)
    changed = diff_paths(params, variables["params"])
    assert changed and all(p.startswith(("stage2/", "head/")) for p in changed)
    assert len(changed) == sum(p.startswith(("stage2/", "head/")) for p in flat_paths(params))
    stats_changed = diff_paths(state["batch_stats"], variables["batch_stats"])
    assert stats_changed and all(p.startswith("stage2/") for p in stats_changed)


def test_frozen_batchnorm_normalises_with_running_statistics():
    model = tiny_resnet()
    variables = init(model)
    rng = np.random.default_rng(0)
    variables["batch_stats"] = jax.tree.map(
        lambda v: rng.uniform(0.5, 1.5, v.shape).astype(np.float32), variables["batch_stats"]
    )
    x = jnp.asarray(rng.normal(size=(4, 8, 8, 1)), jnp.float32)
    with frozen_batch_norm(["^bn1/"]):
        train_out = extract_features(model, variables, x, ["bn1"], train=True)["bn1"]
    conv = np.asarray(extract_features(model, variables, x, ["conv1"])["conv1"])
    p, s = variables["params"]["bn1"], variables["batch_stats"]["bn1"]
    expected = (conv - s["mean"]) / np.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]
    np.testing.assert_allclose(train_out, expected, rtol=1e-5, atol=1e-5)


def test_per_group_learning_rates(digits):
    images, labels = digits
    batch = {"image": images[:8], "label": labels[:8] % 3}
    model = tiny_resnet()
    variables = init(model)
    sgd = {"name": "sgd", "learning_rate": 0.1}
    task = TransferTask(get_task("classification"), lr_multipliers=(("^head/", 10.0),))
    params, _ = run_steps(task, model, variables, batch, sgd, steps=1)
    # Gradients of the plain classification loss, computed without any transfer code.
    base_loss = get_task("classification").loss_fn(model)
    rng = jax.random.fold_in(jax.random.PRNGKey(0), 0)
    state = {"batch_stats": variables["batch_stats"]}
    grads = jax.jit(jax.grad(lambda p: base_loss(p, state, batch, rng)[0]))(variables["params"])
    before, after, g = (flat_paths(t) for t in (variables["params"], params, grads))
    for path in before:
        lr = 1.0 if path.startswith("head/") else 0.1
        np.testing.assert_allclose(after[path] - before[path], -lr * g[path], rtol=1e-4, atol=1e-7)


def test_labels_and_bad_patterns():
    params = init(tiny_resnet())["params"]
    labels = flat_paths(label_params(params, [BACKBONE], [("^head/kernel", 2.0)]))
    assert labels["head/kernel"] == "lr0" and labels["head/bias"] == "default"
    assert labels["stage2/block0/conv1/kernel"] == "frozen"
    with pytest.raises(ValueError, match="matches no parameter"):
        label_params(params, ["^stem/"])
    with pytest.raises(ValueError, match="invalid regular expression"):
        TransferTask(get_task("classification"), freeze=("stage(",))
    with pytest.raises(ValueError, match="list of regular expressions"):
        label_params(params, "head")
    with pytest.raises(ValueError, match="expected a .safetensors/.npz file"):
        TransferTask(get_task("classification"), pretrained="/nonexistent/weights.pth")


def save_checkpoint(tmp_path, variables, step=7):
    variables = dict(variables)
    params = variables.pop("params")
    state = TrainState.create(
        params=params,
        model_state=variables,
        tx=make_optimizer({"name": "sgd", "learning_rate": 0.1}, 1),
        rng=jax.random.PRNGKey(0),
    )
    checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
    checkpointer.save(step, jax.tree.map(np.asarray, state.checkpoint_items()))
    checkpointer.close()


def test_pretrained_falls_back_past_a_corrupt_step_and_changes_nothing(tmp_path, capfd):
    """The same fallback as a training run's restore: the newest readable step is used
    and the unreadable one named, but a reader moves nothing in the source workdir."""
    older, newer = init(tiny_resnet(num_classes=3), seed=1), init(tiny_resnet(num_classes=3), 4)
    save_checkpoint(tmp_path, older, step=7)
    save_checkpoint(tmp_path, newer, step=9)
    target_model = tiny_resnet(num_classes=3)
    fresh = init(target_model, seed=2)
    loaded = load_pretrained(target_model, fresh, tmp_path)
    want = newer["params"]["conv1"]["kernel"]
    np.testing.assert_array_equal(loaded["params"]["conv1"]["kernel"], want)
    for path in (tmp_path / "checkpoints" / "9").rglob("_METADATA"):
        path.write_text("{ not json")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    loaded = load_pretrained(target_model, fresh, tmp_path)
    want = older["params"]["conv1"]["kernel"]
    np.testing.assert_array_equal(loaded["params"]["conv1"]["kernel"], want)
    assert "Checkpoint step 9 is unreadable (" in capfd.readouterr().err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing moved


def test_the_checkpoint_layout_has_one_owner():
    from convjax import checkpoint_layout
    from convjax.runs import workdir
    from convjax.train import checkpointing

    state = TrainState.create(
        params={"w": np.zeros(2)},
        tx=make_optimizer({"name": "sgd", "learning_rate": 0.1}, 1),
        rng=jax.random.PRNGKey(0),
    )
    assert tuple(state.checkpoint_items()) == checkpoint_layout.ITEMS
    assert workdir.CHECKPOINT_DIR is checkpoint_layout.CHECKPOINT_DIR
    assert checkpointing.CORRUPT_DIR is checkpoint_layout.CORRUPT_DIR


def test_pretrained_checkpoint_into_a_new_head(tmp_path):
    source = init(tiny_resnet(num_classes=3), seed=1)
    save_checkpoint(tmp_path, source)
    target_model = tiny_resnet(num_classes=5)
    fresh = init(target_model, seed=2)
    loaded = load_pretrained(target_model, fresh, tmp_path)  # the workdir
    for collection in ("params", "batch_stats"):
        got, want, new = (flat_paths(t[collection]) for t in (loaded, source, fresh))
        for path in got:
            expected = new[path] if path.startswith("head/") else want[path]
            np.testing.assert_array_equal(got[path], expected)
    assert loaded["params"]["head"]["kernel"].shape == (8, 5)
    with pytest.raises(ValueError, match=r"params/head/kernel has shape \(8, 3\)"):
        load_pretrained(target_model, fresh, tmp_path / "checkpoints", exclude=())
    # The registered task loads it in init_variables (what the train loop calls).
    task = get_task("transfer", pretrained=str(tmp_path), freeze=[BACKBONE])
    variables = task.init_variables(target_model, jax.random.key(3), jnp.zeros((1, 8, 8, 1)))
    np.testing.assert_array_equal(
        variables["params"]["conv1"]["kernel"], source["params"]["conv1"]["kernel"]
    )


def test_features_once_trains_a_head_that_drops_into_the_model(digits):
    images, labels = digits
    model = ResNet(stage_sizes=(1, 1), stage_widths=(8, 32), stem="cifar", num_classes=10)
    variables = init(model)
    feats = compute_head_inputs(model, variables, images[:300], batch_size=128)
    # The head's input is the global average of the last stage, computed here from a tap.
    stage2 = extract_features(model, variables, jnp.asarray(images[:5]), ["stage2"])["stage2"]
    np.testing.assert_allclose(
        feats[:5], np.asarray(stage2).mean(axis=(1, 2)), rtol=1e-5, atol=1e-6
    )
    head, history = fit_head(
        feats, labels[:300], 10, {"name": "adam", "learning_rate": 0.2}, epochs=30, batch_size=50
    )
    # A linear head on random conv features of real digits: far above chance (0.1).
    assert history[0]["accuracy"] < 0.3 and history[-1]["accuracy"] > 0.5
    assert history[-1]["loss"] < history[0]["loss"]
    params = dict(variables["params"], head=head["head"])
    full = jax.jit(model.apply)({**variables, "params": params}, images[:300])
    from_features = feats @ head["head"]["kernel"] + head["head"]["bias"]
    np.testing.assert_allclose(full, from_features, rtol=1e-4, atol=1e-4)


def test_transfer_task_hands_every_hook_to_its_base():
    """No attribute forwarding: each hook of the base task is called explicitly."""
    calls = []
    classification = type(get_task("classification"))

    class Recording(classification):
        def train_iterator(self, dataset_config, *, global_batch_size, seed, start_step):
            calls.append(("train_iterator", dataset_config, global_batch_size, seed, start_step))
            return iter([{"image": np.zeros((1, 8, 8, 1))}])

        def check_train_metrics(self, step, scalars):
            calls.append(("check_train_metrics", step, dict(scalars)))

    task = TransferTask(Recording(), freeze=(BACKBONE,))
    batches = task.train_iterator("dataset", global_batch_size=4, seed=1, start_step=2)
    assert next(batches)["image"].shape == (1, 8, 8, 1)
    task.check_train_metrics(5, {"loss": 1.0})
    assert calls == [
        ("train_iterator", "dataset", 4, 1, 2),
        ("check_train_metrics", 5, {"loss": 1.0}),
    ]
    assert task.base.label_smoothing == 0.0
    with pytest.raises(AttributeError):
        task.label_smoothing  # noqa: B018  (a base field is not forwarded)


def test_pretrained_init_is_traceable_for_shape_only_restores(tmp_path):
    source = init(tiny_resnet(num_classes=3), seed=1)
    save_checkpoint(tmp_path, source)
    model = tiny_resnet(num_classes=5)
    task = get_task("transfer", pretrained=str(tmp_path))
    abstract = jax.eval_shape(
        lambda r: task.init_variables(model, r, jnp.zeros((1, 8, 8, 1))), jax.random.key(0)
    )
    fresh = init(model)
    assert jax.tree.map(np.shape, abstract) == jax.tree.map(np.shape, fresh)
    assert abstract["params"]["head"]["kernel"].shape == (8, 5)
