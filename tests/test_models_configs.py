"""Family configs load, name registered models that accept their data; the fine-tuning
config runs end to end through the train loop from a real orbax checkpoint."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.models import get_model, list_models
from convjax.models.pretrained import load_checkpoint_variables
from convjax.models.transfer import flat_paths

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def load_config(name, arg=None):
    spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


VARIANTS = [
    ("resnet_cifar10", "resnet56"),
    ("resnet_cifar10", "plain110"),
    ("resnet_cifar10", "resnet18_cifar"),
    ("resnet_imagenet", "resnet50"),
    ("resnet_imagenet", "resnet18,imagenette"),
    ("vgg_imagenet", "vgg19_bn"),
    ("vgg_imagenet", "vgg16,imagenette"),
    ("alexnet_imagenet", "alexnet_original"),
    ("googlenet_imagenet", "googlenet_torchvision"),
    ("nin_cifar10", None),
    ("finetune_resnet18", "full"),
    ("plain_vs_residual", "digits"),
]


@pytest.mark.parametrize("name,arg", VARIANTS)
def test_configs_and_their_smoke_variants(name, arg):
    config = load_config(name, arg)
    assert config.model in list_models()
    assert config.dataset.name in (
        "cifar10",
        "imagenet2012",
        "imagenette/160px-v2",
        "sklearn_digits",
    )
    smoke_arg = "smoke" if arg in (None, "full", "digits") else f"{arg.split(',')[0]},smoke"
    smoke = load_config(name, smoke_arg)
    assert smoke.dataset.name == "sklearn_digits"
    assert smoke.num_train_steps <= 3 and smoke.batch_size % 4 == 0
    # The smoke model accepts the smoke data (shapes only, nothing compiled).
    h, w = smoke.dataset.image_size
    x = jax.ShapeDtypeStruct((2, h, w, smoke.dataset.channels), jnp.float32)
    model = get_model(smoke.model, **smoke.model_kwargs.to_dict())
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.eval_shape(model.apply, variables, x).shape == (2, 10)


def test_googlenet_smoke_batchnorm_inputs_start_at_unit_scale():
    """Every BatchNorm input of the smoke GoogLeNet starts near unit scale, where the
    running statistics start, so the evaluation-mode network computes what training
    does. (With torchvision's std-0.01 weights they started at rms ~0.1 and the
    evaluation-mode signal shrank ~10x per layer, to logits of ~1e-13.)"""
    config = load_config("googlenet_imagenet", "smoke")
    model = get_model(config.model, **config.model_kwargs.to_dict(), conv_impl=config.conv_impl)
    h, w = config.dataset.image_size
    x = jax.random.normal(jax.random.key(0), (8, h, w, config.dataset.channels))

    def bn_input_scales(rng, x):  # the init and both modes in one compile
        variables = model.init(rng, x[:1])
        out = {}
        for train in (True, False):
            logits, state = model.apply(
                variables, x, train=train, mutable=["batch_stats", "intermediates"],
                capture_intermediates=lambda module, _: module.name == "conv",
                rngs={"dropout": rng},
            )  # fmt: skip
            convs = jax.tree.leaves(state["intermediates"])
            out[train] = [jnp.sqrt(jnp.mean(c**2)) for c in convs], jnp.sqrt(jnp.mean(logits**2))
        return out

    jax.config.update("jax_disable_most_optimizations", True)  # compiles in seconds
    try:
        measured = jax.jit(bn_input_scales)(jax.random.key(config.seed), x)
    finally:
        jax.config.update("jax_disable_most_optimizations", False)
    for train, (scales, logits) in measured.items():
        assert len(scales) >= 3 + 9 * 6  # the stem's three units, six in each block
        assert 0.3 < float(np.median(scales)) < 6, (train, scales)
        assert 0.05 < float(logits) < 20, (train, logits)


def test_finetune_smoke_through_the_train_loop(tmp_path):
    """Pretrained ResNet-20 checkpoint -> frozen backbone + new head, via the real loop."""
    from convjax.runs.train import train_and_evaluate
    from convjax.train.checkpointing import Checkpointer
    from convjax.train.optimizers import make_optimizer
    from convjax.train.state import TrainState

    # A "pretrained" ResNet-20 with another head (7 classes), as the loop checkpoints it.
    source = get_model("resnet20", num_classes=7)
    variables = jax.jit(source.init)(jax.random.key(1), jnp.zeros((1, 32, 32, 1)))
    variables = jax.tree.map(np.asarray, dict(variables))
    params = variables.pop("params")
    rng = np.random.default_rng(0)  # non-trivial statistics, to see that they are kept
    variables["batch_stats"] = jax.tree.map(
        lambda v: rng.uniform(0.5, 1.5, v.shape).astype(np.float32), variables["batch_stats"]
    )
    state = TrainState.create(
        params=params,
        model_state=variables,
        tx=make_optimizer({"name": "sgd", "learning_rate": 0.1}, 1),
        rng=jax.random.PRNGKey(0),
    )
    pretrained = tmp_path / "pretrained"
    checkpointer = Checkpointer(str(pretrained / "checkpoints"))
    checkpointer.save(100, jax.tree.map(np.asarray, state.checkpoint_items()))
    checkpointer.close()

    config = load_config("finetune_resnet18", "smoke")
    config.task_kwargs.pretrained = str(pretrained)
    metrics = train_and_evaluate(config, str(tmp_path / "finetune"))
    from convjax.data.pipeline import dataset_metadata

    assert np.isfinite(metrics["loss"])
    assert metrics["count"] == dataset_metadata(config.dataset).num_eval  # every test digit

    tuned = load_checkpoint_variables(tmp_path / "finetune")
    before = flat_paths(params)
    after = flat_paths(tuned["params"])
    assert after["head/kernel"].shape == (64, 10)  # the new 10-class head
    for path, value in after.items():
        if not path.startswith("head/"):
            np.testing.assert_array_equal(value, before[path], err_msg=path)
    assert not np.allclose(after["head/kernel"], 0)
    for path, value in flat_paths(tuned["batch_stats"]).items():
        np.testing.assert_array_equal(value, flat_paths(variables["batch_stats"])[path])
