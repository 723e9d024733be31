"""GoogLeNet / Inception v1 and NiN: counts, the Inception block against numpy, aux heads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import (
    batch_norm_reference,
    conv2d_reference,
    max_pool_reference,
    param_count,
    random_variables,
)

from convjax.models import get_model
from convjax.models.inception import BLOCKS, InceptionBlock
from convjax.models.nin import MLPConv
from convjax.models.taps import list_layers


@pytest.fixture(autouse=True, scope="module")
def fast_compile():
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def test_torchvision_variant_count():
    assert param_count(get_model("googlenet_torchvision")) == 6_624_904
    # torchvision's model built with aux_logits=True
    assert param_count(get_model("googlenet_torchvision", aux_logits=True)) == 13_004_888


def test_true_5x5_branch_count():
    """A 5x5 kernel has 16 more weights per (in, out) pair than a 3x3."""
    extra = sum(16 * reduce * width for _, _, _, reduce, width, _ in BLOCKS.values())
    assert param_count(get_model("googlenet")) == 6_624_904 + extra
    assert get_model("inception_v1") == get_model("googlenet")
    variables = jax.eval_shape(
        get_model("googlenet").init, jax.random.key(0), jnp.zeros((1, 64, 64, 3))
    )
    assert variables["params"]["inception3a"]["b5x5"]["conv"]["kernel"].shape == (5, 5, 16, 32)


def test_googlenet_shapes_and_aux_outputs():
    model = get_model("googlenet", num_classes=7, aux_logits=True)
    layers = dict(list_layers(model, (2, 224, 224, 3), train=True))
    assert layers["inception3a"].shape == (2, 28, 28, 256)
    assert layers["inception4e"].shape == (2, 14, 14, 832)
    assert layers["inception5b"].shape == (2, 7, 7, 1024)
    assert layers["aux1"].shape == layers["aux2"].shape == layers["output"].shape == (2, 7)
    assert layers["aux1"].dtype == jnp.float32
    without_aux = [n for n, _ in list_layers(get_model("googlenet"), (1, 32, 32, 3))]
    assert not any(n.startswith("aux") for n in without_aux)
    with pytest.raises(ValueError, match="big_kernel"):
        list_layers(get_model("googlenet", big_kernel=7), (1, 64, 64, 3))
    with pytest.raises(ValueError, match="at least 15x15"):
        list_layers(get_model("googlenet"), (1, 14, 14, 3))


def conv_bn_relu(x, p, s, pad):
    y = conv2d_reference(x, p["conv"]["kernel"], padding=pad)
    return np.maximum(batch_norm_reference(y, p["bn"], s["bn"], eps=1e-3), 0)


@pytest.mark.parametrize("big_kernel", [5, 3])
def test_inception_block_matches_numpy(big_kernel):
    block = InceptionBlock((3, 2, 4, 2, 5, 3), big_kernel=big_kernel)
    x = np.random.default_rng(0).normal(size=(2, 6, 5, 4)).astype(np.float32)
    variables = random_variables(block, x.shape)
    got = jax.jit(block.apply)(variables, x)
    p, s = variables["params"], variables["batch_stats"]
    branches = [
        conv_bn_relu(x, p["b1x1"], s["b1x1"], 0),
        conv_bn_relu(
            conv_bn_relu(x, p["b3x3_reduce"], s["b3x3_reduce"], 0), p["b3x3"], s["b3x3"], 1
        ),
        conv_bn_relu(
            conv_bn_relu(x, p["b5x5_reduce"], s["b5x5_reduce"], 0),
            p["b5x5"],
            s["b5x5"],
            big_kernel // 2,
        ),
        conv_bn_relu(
            max_pool_reference(x, 3, 1, 1, ceil_mode=True), p["pool_proj"], s["pool_proj"], 0
        ),
    ]
    np.testing.assert_allclose(got, np.concatenate(branches, -1), rtol=1e-4, atol=1e-4)


def nin_count(classes=10):
    blocks = [((192, 160, 96), 5, 3), ((192, 192, 192), 5, 96), ((192, 192, classes), 3, 192)]
    count = 0
    for widths, kernel, c_in in blocks:
        for i, width in enumerate(widths):
            k = kernel if i == 0 else 1
            count += k * k * c_in * width + width
            c_in = width
    return count


def test_nin_count_and_mlpconv_matches_numpy():
    assert param_count(get_model("nin"), (1, 32, 32, 3)) == nin_count() == 966_986
    block = MLPConv((6, 5, 4), 3, relu_last=False)
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype(np.float32)
    variables = random_variables(block, x.shape)
    p = variables["params"]
    y = np.maximum(conv2d_reference(x, p["conv"]["kernel"], p["conv"]["bias"], padding=1), 0)
    # a 1x1 convolution is a dense layer applied at every pixel
    y = np.maximum(y @ p["cccp1"]["kernel"][0, 0] + p["cccp1"]["bias"], 0)
    y = y @ p["cccp2"]["kernel"][0, 0] + p["cccp2"]["bias"]
    np.testing.assert_allclose(jax.jit(block.apply)(variables, x), y, rtol=1e-4, atol=1e-4)
    layers = dict(list_layers(get_model("nin"), (2, 32, 32, 3)))
    assert layers["mlpconv3"].shape == (2, 8, 8, 10) and layers["output"].shape == (2, 10)
