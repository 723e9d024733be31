"""ResNets and plain nets: canonical counts, blocks against numpy, shortcuts, sync BN."""

import functools

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
from convjax.models.blocks import max_pool
from convjax.models.resnet import BasicBlock, Bottleneck, ResNet
from convjax.models.taps import feature_extractor, list_layers


@pytest.fixture(autouse=True, scope="module")
def fast_compile():
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


# Published torchvision counts.
IMAGENET_COUNTS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


@pytest.mark.parametrize("name", sorted(IMAGENET_COUNTS))
def test_imagenet_counts_match_torchvision(name):
    assert param_count(get_model(name)) == IMAGENET_COUNTS[name]


def cifar_resnet_count(depth: int, classes: int = 10) -> int:
    """He et al. sec. 4.2 with option-A shortcuts, counted from the architecture."""
    n = (depth - 2) // 6
    count = 3 * 3 * 3 * 16 + 2 * 16  # stem conv (no bias) + BN
    c_in = 16
    for width in (16, 32, 64):
        for _ in range(n):
            count += 9 * c_in * width + 2 * width + 9 * width * width + 2 * width
            c_in = width
    return count + 64 * classes + classes


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_counts(depth):
    expected = cifar_resnet_count(depth)
    assert param_count(get_model(f"resnet{depth}"), (1, 32, 32, 3)) == expected
    # Option A shortcuts have no parameters, so the plain net has the same count.
    assert param_count(get_model(f"plain{depth}"), (1, 32, 32, 3)) == expected
    assert expected == {20: 269_722, 56: 853_018}.get(depth, expected)  # the usual figures


def projection_count(block_expansion: int, stage_sizes) -> int:
    count, c_in = 0, 64
    for width in (64, 128, 256, 512):
        c_out = width * block_expansion
        if c_in != c_out or width != 64:
            count += c_in * c_out + 2 * c_out
        c_in = c_out
    return count


@pytest.mark.parametrize("depth,expansion", [(18, 1), (50, 4)])
def test_plain_imagenet_nets_drop_only_the_projections(depth, expansion):
    plain = param_count(get_model(f"plain{depth}"))
    assert plain == IMAGENET_COUNTS[f"resnet{depth}"] - projection_count(expansion, None)
    names = [n for n, _ in list_layers(get_model(f"plain{depth}"), (1, 64, 64, 3))]
    assert not any("downsample" in n for n in names)
    assert "stage3" in names and "stage4/block1/conv2" in names


def test_structure_and_any_input_size():
    model = get_model("resnet50", num_classes=5)
    layers = dict(list_layers(model, (2, 97, 131, 3)))
    # torchvision's symmetric padding: ceil(97 / 2) = 49, then 25, 13, 7, 4.
    assert layers["conv1"].shape == (2, 49, 66, 64)
    assert layers["stage1"].shape == (2, 25, 33, 256)
    assert layers["stage4"].shape == (2, 4, 5, 2048)
    assert layers["output"].shape == (2, 5)
    tiny = dict(list_layers(get_model("resnet18"), (1, 1, 1, 3)))
    assert tiny["stage4"].shape == (1, 1, 1, 512)
    # stride-2 blocks keep their projection even when a 1x1 map does not shrink
    assert "stage4/block0/downsample_conv" in tiny


def test_bad_options_are_rejected():
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match="valid: cifar, imagenet"):
        jax.eval_shape(get_model("resnet18", stem="tiny").init, jax.random.key(0), x)
    with pytest.raises(ValueError, match="valid: projection, zero_pad"):
        jax.eval_shape(get_model("resnet18", shortcut="identity").init, jax.random.key(0), x)
    with pytest.raises(ValueError, match="same length"):
        jax.eval_shape(ResNet(stage_sizes=(1, 1)).init, jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        jax.eval_shape(get_model("resnet18").init, jax.random.key(0), x[0])


def conv_bn(x, p, s, name, stride=1, kernel=3):
    conv = conv2d_reference(x, p[f"conv{name}"]["kernel"], stride=stride, padding=kernel // 2)
    return batch_norm_reference(conv, p[f"bn{name}"], s[f"bn{name}"])


def block_reference(x, p, s, block, stride, residual, shortcut):
    """BasicBlock / Bottleneck in numpy from the paper's equations (eval mode)."""
    relu = functools.partial(np.maximum, 0)
    if block is BasicBlock:
        y = relu(conv_bn(x, p, s, "1", stride))
        y = conv_bn(y, p, s, "2")
    else:
        y = relu(conv_bn(x, p, s, "1", kernel=1))
        y = relu(conv_bn(y, p, s, "2", stride))
        y = conv_bn(y, p, s, "3", kernel=1)
    if not residual:
        return relu(y)
    if "downsample_conv" in p:
        x = conv2d_reference(x, p["downsample_conv"]["kernel"], stride=stride)
        x = batch_norm_reference(x, p["downsample_bn"], s["downsample_bn"])
    elif x.shape != y.shape:
        x = x[:, ::stride, ::stride]
        extra = y.shape[-1] - x.shape[-1]
        x = np.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    return relu(y + x)


@pytest.mark.parametrize(
    "block,stride,residual,shortcut,c_in,width",
    [
        (BasicBlock, 1, True, "projection", 8, 8),
        (BasicBlock, 2, True, "projection", 4, 8),
        (BasicBlock, 2, True, "zero_pad", 4, 8),
        (BasicBlock, 2, False, "projection", 4, 8),
        (Bottleneck, 2, True, "projection", 8, 4),
        (Bottleneck, 1, True, "projection", 16, 4),
    ],
)
def test_blocks_match_numpy(block, stride, residual, shortcut, c_in, width):
    module = block(width, strides=stride, residual=residual, shortcut=shortcut)
    x = np.random.default_rng(0).normal(size=(2, 7, 6, c_in)).astype(np.float32)
    variables = random_variables(module, x.shape)
    if shortcut == "zero_pad" or not residual:
        assert "downsample_conv" not in variables["params"]
    y = jax.jit(module.apply)(variables, x)
    p, s = variables["params"], variables["batch_stats"]
    expected = block_reference(x, p, s, block, stride, residual, shortcut)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "size,window,stride,padding,ceil",
    [
        (7, 3, 2, 1, False),
        (8, 3, 2, 1, False),
        (112, 3, 2, 0, True),
        (14, 2, 2, 0, True),
        (13, 3, 2, 0, True),
        (6, 3, 1, 1, True),
        (9, 3, 2, 1, True),
    ],
)
def test_max_pool_matches_pytorch_definition(size, window, stride, padding, ceil):
    x = np.random.default_rng(size).normal(size=(1, size, size + 1, 2)).astype(np.float32)
    got = max_pool(jnp.asarray(x), window, stride, padding, ceil_mode=ceil)
    np.testing.assert_array_equal(got, max_pool_reference(x, window, stride, padding, ceil))


def tiny_resnet(**kwargs):
    return ResNet(stage_sizes=(1, 1), stage_widths=(4, 8), stem="cifar", num_classes=3, **kwargs)


def test_synchronised_batchnorm_matches_the_global_batch():
    """With axis_name, per-device BN statistics are those of the whole batch."""
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype(np.float32)
    variables = random_variables(tiny_resnet(), x.shape)

    def train_apply(model, variables, x):
        return model.apply(variables, x, train=True, mutable=["batch_stats"])

    logits, state = jax.jit(functools.partial(train_apply, tiny_resnet()))(variables, x)
    synced = jax.pmap(
        functools.partial(train_apply, tiny_resnet(axis_name="data")),
        axis_name="data",
        in_axes=(None, 0),
    )
    shards = x.reshape(4, 2, *x.shape[1:])
    logits_p, state_p = synced(variables, shards)
    np.testing.assert_allclose(logits_p.reshape(8, 3), logits, rtol=1e-4, atol=1e-4)
    for got, want in zip(jax.tree.leaves(state_p), jax.tree.leaves(state), strict=True):
        np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got[3], want, rtol=1e-4, atol=1e-5)


def test_bf16_compute_keeps_f32_parameters_and_logits():
    model = get_model("resnet50", dtype=jnp.bfloat16)
    x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    layers = dict(list_layers(model, x.shape))
    assert layers["stage2"].dtype == jnp.bfloat16
    assert layers["output"].dtype == jnp.float32


def test_zero_init_residual_makes_blocks_identity_at_init():
    model = tiny_resnet(zero_init_residual=True, include_top=False)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    assert not np.any(variables["params"]["stage1"]["block0"]["bn2"]["scale"])
    taps = feature_extractor(model, ["stage1/block0/bn2", "stage1", "bn1"])(variables, x)
    assert not np.any(taps["stage1/block0/bn2"])
    # The residual branch adds zero: stage1's single block passes relu(stem) through.
    np.testing.assert_allclose(taps["stage1"], np.maximum(taps["bn1"], 0), atol=1e-6)
