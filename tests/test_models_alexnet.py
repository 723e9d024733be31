"""AlexNet: canonical counts, the original's grouped convolutions and LRN against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import conv2d_reference, max_pool_reference, param_count, random_variables

from convjax.models import get_model
from convjax.models.blocks import local_response_norm
from convjax.models.taps import list_layers


@pytest.fixture(autouse=True, scope="module")
def fast_compile():
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def original_alexnet_count(classes: int = 1000) -> int:
    """The paper's layer table: (out, in per group, kernel) + biases; fc 6x6x256 -> 4096."""
    convs = [(96, 3, 11), (256, 48, 5), (384, 256, 3), (384, 192, 3), (256, 192, 3)]
    count = sum(o * i * k * k + o for o, i, k in convs)
    return count + 9216 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * classes + classes


def test_counts():
    assert param_count(get_model("alexnet")) == 61_100_840  # torchvision
    assert param_count(get_model("alexnet_original"), (1, 227, 227, 3)) == 60_965_224
    assert original_alexnet_count() == 60_965_224
    # any admissible input size, any number of classes
    assert param_count(get_model("alexnet", num_classes=10), (1, 63, 80, 3)) == (
        61_100_840 - 990 * 4097
    )


def test_input_sizes():
    layers = dict(list_layers(get_model("alexnet"), (2, 224, 224, 3)))
    assert layers["conv1"].shape == (2, 55, 55, 64)
    assert layers["pool5"].shape == (2, 6, 6, 256)
    layers = dict(list_layers(get_model("alexnet_original"), (2, 227, 227, 3)))
    assert layers["conv1"].shape == (2, 55, 55, 96)
    assert layers["conv2"].shape == (2, 27, 27, 256)
    assert layers["pool5"].shape == (2, 6, 6, 256)
    with pytest.raises(ValueError, match="at least 63x63"):
        list_layers(get_model("alexnet"), (1, 62, 62, 3))
    with pytest.raises(ValueError, match="valid: original, torchvision"):
        list_layers(get_model("alexnet", variant="caffe"), (1, 224, 224, 3))


def lrn_reference(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """Krizhevsky et al. eq. (section 3.3), with a loop over channels."""
    y = np.zeros_like(x)
    n = x.shape[-1]
    for c in range(n):
        lo, hi = max(0, c - size // 2), min(n - 1, c + size // 2)
        y[..., c] = x[..., c] / (k + alpha * np.sum(x[..., lo : hi + 1] ** 2, axis=-1)) ** beta
    return y


def test_local_response_norm_matches_the_paper():
    x = np.random.default_rng(0).normal(scale=30.0, size=(2, 3, 4, 11))
    np.testing.assert_allclose(
        local_response_norm(jnp.asarray(x, jnp.float32)), lrn_reference(x), rtol=1e-5
    )


@pytest.mark.parametrize("variant,size", [("original", 67), ("torchvision", 63)])
def test_conv_features_match_numpy(variant, size):
    """Five convolutions (grouped in the original), ReLU, LRN and pools, all in numpy."""
    model = get_model(
        f"alexnet_{variant}" if variant == "original" else "alexnet", include_top=False
    )
    x = np.random.default_rng(1).uniform(size=(1, size, size, 3)).astype(np.float32)
    variables = random_variables(model, x.shape)
    got = jax.jit(model.apply)(variables, x)
    p = variables["params"]
    original = variant == "original"
    specs = [
        (4, 0 if original else 2, 1),
        (1, 2, 2 if original else 1),
        (1, 1, 1),
        (1, 1, 2 if original else 1),
        (1, 1, 2 if original else 1),
    ]
    y = x.astype(np.float64)
    for i, (stride, pad, groups) in enumerate(specs, start=1):
        y = conv2d_reference(y, p[f"conv{i}"]["kernel"], p[f"conv{i}"]["bias"], stride, pad, groups)
        y = np.maximum(y, 0)
        if original and i in (1, 2):
            y = lrn_reference(y)
        if i in (1, 2, 5):
            y = max_pool_reference(y, 3, 2)
    assert got.shape == y.shape
    np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-4)
