"""Feature taps: named intermediate activations of any model, checked against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import conv2d_reference, random_variables

from convjax.models import get_model
from convjax.models.taps import apply_with_taps, extract_features, feature_extractor, list_layers


@pytest.fixture(autouse=True, scope="module")
def fast_compile():
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def test_vgg19_has_the_gatys_layer_names_in_call_order():
    names = [name for name, _ in list_layers(get_model("vgg19", include_top=False), (1, 64, 64, 3))]
    sizes = (2, 2, 4, 4, 4)
    for stage, size in enumerate(sizes, start=1):
        for i in range(1, size + 1):
            assert names.index(f"conv{stage}_{i}") < names.index(f"relu{stage}_{i}")
            assert names.index(f"relu{stage}_{i}") < names.index(f"pool{stage}")
    gatys = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv4_2", "conv5_1", "conv5_4"]
    assert all(name in names for name in gatys + ["pool5", "relu5_4", "output"])
    assert "conv5_5" not in names


def test_list_layers_shapes_without_initialising():
    layers = dict(list_layers(get_model("vgg16"), (2, 64, 96, 3)))
    assert layers["conv4_2"].shape == (2, 8, 12, 512)
    assert layers["pool5"].shape == (2, 2, 3, 512)
    assert layers["fc7"].shape == (2, 4096)
    assert layers["output"].shape == (2, 1000)


def test_taps_work_on_a_model_that_does_not_sow():
    """LeNet-5 was written without taps: module outputs are still reachable by name."""
    model = get_model("lenet5")
    x = np.random.default_rng(0).normal(size=(3, 32, 32, 1)).astype(np.float32)
    variables = random_variables(model, x.shape)
    assert [n for n, _ in list_layers(model, x.shape)] == [
        "conv1",
        "conv2",
        "fc1",
        "fc2",
        "logits",
        "output",
    ]
    feats = feature_extractor(model, ["conv1", "fc1", "output"])(variables, jnp.asarray(x))
    p = jax.tree.map(np.asarray, variables["params"])
    np.testing.assert_allclose(
        feats["conv1"],
        conv2d_reference(x, p["conv1"]["kernel"], p["conv1"]["bias"]),
        rtol=1e-4,
        atol=1e-4,
    )
    np.testing.assert_allclose(feats["output"], jax.jit(model.apply)(variables, x), rtol=1e-6)
    assert feats["fc1"].shape == (3, 120)


def test_vgg_conv_taps_match_numpy():
    model = get_model("vgg11", include_top=False)
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype(np.float32)
    variables = random_variables(model, x.shape)
    feats = feature_extractor(model, ["conv1_1", "conv2_1", "pool1"])(variables, jnp.asarray(x))
    p = jax.tree.map(np.asarray, variables["params"])
    conv11 = conv2d_reference(x, p["conv1_1"]["kernel"], p["conv1_1"]["bias"], padding=1)
    np.testing.assert_allclose(feats["conv1_1"], conv11, rtol=1e-4, atol=1e-4)
    # pool1 -> conv2_1 in numpy, from the tapped pool1.
    conv21 = conv2d_reference(
        np.asarray(feats["pool1"]), p["conv2_1"]["kernel"], p["conv2_1"]["bias"], padding=1
    )
    np.testing.assert_allclose(feats["conv2_1"], conv21, rtol=1e-4, atol=1e-4)


def test_unknown_layer_names_list_the_valid_ones():
    model = get_model("lenet5")
    x = jnp.zeros((1, 32, 32, 1))
    variables = random_variables(model, x.shape)
    with pytest.raises(ValueError, match=r"Unknown layer\(s\) \['conv9'\].*Valid layers: conv1, "):
        extract_features(model, variables, x, ["conv1", "conv9"])
    with pytest.raises(ValueError, match="list of layer names"):
        extract_features(model, variables, x, "conv1")


def test_training_mode_taps_use_batch_statistics():
    model = get_model("lenet5", batch_norm=True)
    x = jax.random.normal(jax.random.key(0), (8, 32, 32, 1))
    variables = random_variables(model, x.shape)
    feats = feature_extractor(model, ["bn1"], train=True)(variables, x)
    bn1 = np.asarray(feats["bn1"])
    p = variables["params"]["bn1"]
    normalised = (bn1 - np.asarray(p["bias"])) / np.asarray(p["scale"])
    np.testing.assert_allclose(normalised.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(normalised.std(axis=(0, 1, 2)), 1, atol=1e-2)


def test_a_module_calling_super_call_counts_once():
    """Flax captures a subclass's __call__ and the super().__call__ inside it."""
    import flax.linen as nn

    class CheckedDense(nn.Dense):  # returns super's output unchanged: one call
        def __call__(self, x):
            return super().__call__(x)

    class ScaledDense(nn.Dense):  # a different value: both calls stay visible
        def __call__(self, x):
            return super().__call__(x) * 2.0

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = CheckedDense(3, name="checked")(x)
            return ScaledDense(3, name="scaled")(x)

    x = jnp.ones((2, 4))
    variables = Net().init(jax.random.key(0), x)
    names = [n for n, _ in list_layers(Net(), x.shape)]
    assert names == ["checked", "scaled#0", "scaled#1", "output"]
    feats = extract_features(Net(), variables, x, ["scaled#0", "scaled#1", "output"])
    np.testing.assert_allclose(feats["scaled#1"], 2 * feats["scaled#0"], rtol=1e-6)
    np.testing.assert_allclose(feats["output"], feats["scaled#1"], rtol=1e-6)


def test_apply_with_taps_returns_output_taps_and_updated_state():
    """What a task needs for auxiliary losses: output, tapped layers, new batch_stats."""
    model = get_model("lenet5", batch_norm=True)
    x = jax.random.normal(jax.random.key(0), (8, 32, 32, 1))
    variables = random_variables(model, x.shape)
    run = jax.jit(
        lambda v, x: apply_with_taps(
            model, v, x, ["fc2", "conv1"], train=True, mutable=["batch_stats"]
        )
    )
    logits, taps, state = run(variables, x)
    expected_logits, expected_state = jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])
    )(variables, x)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-6)
    assert set(state) == {"batch_stats"}
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(expected_state), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    p = variables["params"]["logits"]
    np.testing.assert_allclose(
        logits, np.maximum(taps["fc2"], 0) @ p["kernel"] + p["bias"], rtol=1e-5, atol=1e-5
    )
    # bn1's running mean moved 10% of the way to the batch mean of the tapped conv1
    old = np.asarray(variables["batch_stats"]["bn1"]["mean"])
    batch_mean = np.asarray(taps["conv1"]).mean((0, 1, 2))
    np.testing.assert_allclose(
        state["batch_stats"]["bn1"]["mean"], 0.9 * old + 0.1 * batch_mean, rtol=1e-5, atol=1e-6
    )
