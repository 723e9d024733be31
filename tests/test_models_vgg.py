"""VGG: canonical parameter counts, structure, pooling options, dtype and input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import param_count, random_variables

from convjax.models import get_model, list_models
from convjax.models.blocks import adaptive_avg_pool
from convjax.models.taps import feature_extractor


@pytest.fixture(autouse=True, scope="module")
def fast_compile():
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


# Published torchvision counts (weights and biases; BatchNorm running stats are buffers).
TORCHVISION_COUNTS = {
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_COUNTS))
def test_parameter_counts_match_torchvision(name):
    assert name in list_models()
    assert param_count(get_model(name)) == TORCHVISION_COUNTS[name]


def test_counts_do_not_depend_on_input_size_and_follow_num_classes():
    # Adaptive pooling to 7x7 makes the classifier independent of the input size.
    base = TORCHVISION_COUNTS["vgg16"]
    assert param_count(get_model("vgg16"), (2, 47, 61, 3)) == base
    assert param_count(get_model("vgg16", num_classes=10)) == base - 990 * 4096 - 990


def test_feature_network_has_no_classifier():
    model = get_model("vgg19", include_top=False)
    x = jax.ShapeDtypeStruct((2, 96, 64, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert not {"fc6", "fc7", "head"} & set(variables["params"])
    out = jax.eval_shape(model.apply, variables, x)
    assert out.shape == (2, 3, 2, 512)


@pytest.mark.parametrize("shape", [(1, 32, 32, 3), (2, 47, 61, 1), (1, 224, 224, 3)])
def test_any_admissible_input_size(shape):
    model = get_model("vgg11", num_classes=7)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.eval_shape(model.apply, variables, x).shape == (shape[0], 7)


def test_bad_inputs_are_rejected_before_compiling():
    model = get_model("vgg11")
    with pytest.raises(ValueError, match="at least 32x32"):
        model.init(jax.random.key(0), jnp.zeros((1, 31, 64, 3)))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        model.init(jax.random.key(0), jnp.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="valid: avg, max"):
        get_model("vgg11", pool="median").init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="Valid models"):
        get_model("vgg17")


def test_avg_pool_option_and_bf16_compute():
    """pool='avg' averages 2x2 blocks (checked in numpy); bf16 compute keeps f32 params."""
    model = get_model("vgg11", include_top=False, pool="avg", dtype=jnp.bfloat16)
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    variables = random_variables(model, x.shape)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
    feats = feature_extractor(model, ["relu1_1", "pool1", "output"])(variables, x)
    assert feats["relu1_1"].dtype == jnp.bfloat16
    relu = np.asarray(feats["relu1_1"], np.float32)
    expected = relu.reshape(2, 16, 2, 16, 2, 64).mean(axis=(2, 4))
    np.testing.assert_allclose(np.asarray(feats["pool1"], np.float32), expected, rtol=1e-2)
    assert feats["output"].shape == (2, 1, 1, 512)


def test_max_pool_and_relu_taps():
    model = get_model("vgg11", include_top=False)
    x = jax.random.normal(jax.random.key(1), (1, 32, 32, 3))
    variables = random_variables(model, x.shape)
    feats = feature_extractor(model, ["conv1_1", "relu1_1", "pool1"])(variables, x)
    conv = np.asarray(feats["conv1_1"])
    np.testing.assert_allclose(feats["relu1_1"], np.maximum(conv, 0), atol=1e-6)
    expected = np.maximum(conv, 0).reshape(1, 16, 2, 16, 2, 64).max(axis=(2, 4))
    np.testing.assert_allclose(feats["pool1"], expected, atol=1e-6)


def adaptive_avg_pool_reference(x: np.ndarray, out: int) -> np.ndarray:
    """PyTorch's AdaptiveAvgPool2d, written from its definition with loops."""
    b, h, w, c = x.shape
    y = np.zeros((b, out, out, c), x.dtype)
    for i in range(out):
        h0, h1 = int(np.floor(i * h / out)), int(np.ceil((i + 1) * h / out))
        for j in range(out):
            w0, w1 = int(np.floor(j * w / out)), int(np.ceil((j + 1) * w / out))
            y[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
    return y


@pytest.mark.parametrize("size", [1, 3, 5, 7, 10, 14])
def test_adaptive_avg_pool_matches_definition(size):
    x = np.random.default_rng(size).normal(size=(2, size, size + 2, 3)).astype(np.float32)
    np.testing.assert_allclose(
        adaptive_avg_pool(jnp.asarray(x), 7), adaptive_avg_pool_reference(x, 7), atol=1e-5
    )


def test_batchnorm_training_updates_statistics_with_dropout():
    model = get_model("vgg11_bn", num_classes=3, adaptive_pool_size=1, fc_width=16)
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    variables = random_variables(model, x.shape)
    logits, state = jax.jit(model.apply, static_argnames=("train", "mutable"))(
        variables, x, train=True, mutable=("batch_stats",), rngs={"dropout": jax.random.key(2)}
    )
    assert logits.shape == (4, 3) and logits.dtype == jnp.float32
    # conv1_1's batch mean over [B, H, W], folded in with momentum 0.9.
    conv = np.asarray(feature_extractor(model, ["conv1_1"])(variables, x)["conv1_1"])
    old = np.asarray(variables["batch_stats"]["bn1_1"]["mean"])
    np.testing.assert_allclose(
        state["batch_stats"]["bn1_1"]["mean"],
        0.9 * old + 0.1 * conv.mean(axis=(0, 1, 2)),
        rtol=1e-4,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        state["batch_stats"]["bn1_1"]["var"],
        0.9 * np.asarray(variables["batch_stats"]["bn1_1"]["var"]) + 0.1 * conv.var(axis=(0, 1, 2)),
        rtol=1e-4,
        atol=1e-5,
    )
