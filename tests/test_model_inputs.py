"""Wrong image rank or channel count: a clear error at trace time, before compiling."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.models import get_model, list_models
from convjax.models.layers import Conv, conv_function


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
        lambda: convnet.init_with_output(jax.random.PRNGKey(0), x, capture_intermediates=True)
    )
    inter = state["intermediates"]
    assert inter["conv1"]["__call__"][0].shape == (1, 37, 37, 10)
    assert inter["conv2"]["__call__"][0].shape == (1, 17, 17, 20)
    assert inter["conv3"]["__call__"][0].shape == (1, 7, 7, 40)
    assert state["params"]["logits"]["kernel"].shape == (1960, 10)


ZOO_WITH_CONVOLUTIONS = [
    "lenet5",
    "simple_convnet",
    "alexnet",
    "alexnet_original",
    "vgg11",
    "vgg16_bn",
    "resnet18",
    "resnet20",
    "resnet50",
    "resnet18_cifar",
    "plain20",
    "googlenet",
    "nin",
    "yolo",
    "localization_net",
    "landmark_net",
    "window_classifier",
    "window_classifier_conv",
    "embedding",
    "siamese_verifier",
]


def _conv_layers(model, x):
    """(path, conv_impl) of every Conv the model calls on x, from a bound trace."""
    seen = []

    def interceptor(next_fun, args, kwargs, context):
        if isinstance(context.module, Conv) and context.method_name == "__call__":
            seen.append((context.module.path, context.module.conv_impl))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    return seen


@pytest.mark.parametrize("name", ZOO_WITH_CONVOLUTIONS)
def test_every_convolution_follows_the_model_conv_impl(name):
    model = get_model(name, conv_impl="xla")
    if name in ("embedding", "siamese_verifier"):
        shape = (2, 2, 32, 32, 1) if name == "siamese_verifier" else (2, 32, 32, 1)
    elif name in ("window_classifier",):
        shape = (2, 14, 14, 3)
    elif name.startswith(("alexnet", "resnet50", "resnet18", "googlenet", "vgg")) and not (
        name == "resnet18_cifar"
    ):
        shape = (1, 224, 224, 3) if name.startswith("alexnet") else (1, 64, 64, 3)
    else:
        shape = (2, 32, 32, 3) if name not in ("lenet5",) else (2, 32, 32, 1)
    layers = _conv_layers(model, jnp.zeros(shape))
    assert layers, f"{name} called no Conv"
    assert {impl for _, impl in layers} == {"xla"}, layers
    assert model.conv_impl == "xla"
    assert get_model(name).conv_impl == "auto"


def test_conv_impls_give_the_same_outputs_and_gradients():
    # simple_convnet: 3x3 stride 1 and 5x5 stride 2 convolutions, C_in = 3.
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 39, 39, 3))
    models = {impl: get_model("simple_convnet", conv_impl=impl) for impl in ("cpu", "xla")}
    variables = models["xla"].init(jax.random.PRNGKey(0), x)

    def loss(params, model):
        return jnp.sum(jnp.sin(model.apply({"params": params}, x)))

    grad_fn = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    reference = grad_fn(variables["params"], models["xla"])
    got = grad_fn(variables["params"], models["cpu"])
    for g, want in zip(jax.tree.leaves(got), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-4)


def test_auto_is_the_cpu_convolution_on_cpu():
    from convjax.ops import conv_cpu

    assert jax.default_backend() == "cpu"
    assert conv_function("cpu") is conv_cpu.conv_general_dilated
    assert conv_function("xla") is jax.lax.conv_general_dilated
    x = jnp.ones((2, 32, 32, 1))
    for impl, cpu_path in (("auto", True), ("cpu", True), ("xla", False)):
        model = get_model("lenet5", conv_impl=impl)
        variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
        jaxpr = str(jax.make_jaxpr(model.apply)(variables, x))
        # The CPU convolution is a jitted custom_vjp named _conv; XLA's is the bare primitive.
        assert ("name=_conv" in jaxpr) == cpu_path, impl


def test_unknown_conv_impl_names_the_choices():
    model = get_model("resnet18", conv_impl="cudnn")
    with pytest.raises(ValueError, match=r"Unknown conv_impl 'cudnn'; valid: auto, cpu, xla"):
        jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
