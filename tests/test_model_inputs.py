"""Wrong image rank or channel count: a clear error at trace time, before compiling."""

import jax
import jax.numpy as jnp
import pytest

from convjax.models import get_model, list_models
from convjax.models.layers import conv_impls, use_conv_impl


def test_wrong_rank_names_the_expected_layout():
    model = get_model("lenet5")
    with pytest.raises(ValueError, match=r"NHWC image batch \[B, H, W, C\].*\(32, 32, 1\)"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((32, 32, 1)))


def test_wrong_channel_count_names_the_expected_channels():
    model = get_model("lenet5")
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))
    with pytest.raises(ValueError, match=r"'conv1' expects .* C=1 channel"):
        jax.jit(model.apply)(variables, jnp.zeros((2, 32, 32, 3)))


def test_too_small_image_is_rejected():
    with pytest.raises(ValueError, match="at least 28x28"):
        get_model("lenet5").init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)))


def test_registry_lists_models():
    assert {"lenet5", "simple_convnet"} <= set(list_models())


def test_parameter_counts():
    lenet = get_model("lenet5", num_classes=10)
    shapes = jax.eval_shape(lenet.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))
    assert sum(x.size for x in jax.tree.leaves(shapes)) == 61_706
    # The course's ConvNet: 39x39x3 -> 37x37x10 -> 17x17x20 -> 7x7x40 -> 1,960 -> 10.
    convnet = get_model("simple_convnet", num_classes=10)
    x = jnp.zeros((1, 39, 39, 3))
    _, state = jax.eval_shape(
        lambda: convnet.init_with_output(
            jax.random.PRNGKey(0), x, capture_intermediates=True
        )
    )
    inter = state["intermediates"]
    assert inter["conv1"]["__call__"][0].shape == (1, 37, 37, 10)
    assert inter["conv2"]["__call__"][0].shape == (1, 17, 17, 20)
    assert inter["conv3"]["__call__"][0].shape == (1, 7, 7, 40)
    assert state["params"]["logits"]["kernel"].shape == (1960, 10)


def test_convolution_is_swappable_in_one_place():
    calls = []

    def counting_conv(*args, **kwargs):
        calls.append(kwargs.get("window_strides"))
        return jax.lax.conv_general_dilated(*args, **kwargs)

    from convjax.models.layers import register_conv_impl

    register_conv_impl("counting", counting_conv)
    assert "counting" in conv_impls()
    model = get_model("lenet5")
    x = jnp.ones((2, 32, 32, 1))
    variables = model.init(jax.random.PRNGKey(0), x)
    reference = model.apply(variables, x)
    with use_conv_impl("counting"):
        swapped = model.apply(variables, x)
    assert len(calls) == 2  # both LeNet convolutions went through it
    assert jnp.allclose(reference, swapped)
    with pytest.raises(ValueError, match="valid: counting, xla"):
        with use_conv_impl("cudnn"):
            pass
