"""Model summary: totals equal canonical counts; MACs and receptive fields from independent
arithmetic (the course's Inception example, the receptive-field recurrence, gradients)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import random_variables

from convjax.models import get_model
from convjax.models.inception import InceptionBlock
from convjax.models.layers import Conv
from convjax.models.resnet import BasicBlock, Bottleneck
from convjax.models.summary import summary


@pytest.fixture(autouse=True, scope="module")
def fast_compile():
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


class FiveByFive(nn.Module):
    """The course's example: 28x28x192 -> 5x5 'same' convolution -> 28x28x32."""

    bottleneck: int | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.bottleneck:
            x = Conv(self.bottleneck, (1, 1), name="reduce")(x)
        return Conv(32, (5, 5), padding="SAME", name="conv5x5")(x)


def test_inception_arithmetic():
    direct = summary(FiveByFive(), (1, 28, 28, 192))
    assert direct.total_macs == 28 * 28 * 32 * (5 * 5 * 192)
    assert 120e6 < direct.total_macs < 121e6  # "about 120 million"
    cheap = summary(FiveByFive(bottleneck=16), (1, 28, 28, 192))
    rows = {layer.name: layer for layer in cheap.layers}
    assert rows["reduce"].macs == 28 * 28 * 16 * 192  # 2.4M
    assert rows["conv5x5"].macs == 28 * 28 * 32 * (5 * 5 * 16)  # 10.0M
    assert round(cheap.total_macs / 1e6, 1) == 12.4
    # MACs are per example, whatever the batch.
    assert summary(FiveByFive(), (4, 28, 28, 192)).total_macs == direct.total_macs


# Parameters: torchvision's published counts. MACs: torchvision's published "GFLOPS"
# (multiply-adds of convolutions and linear layers at 224x224), to their two decimals.
CANONICAL = {
    "vgg16": (138_357_544, 15.47),
    "resnet50": (25_557_032, 4.09),
    "alexnet": (61_100_840, 0.71),
    "googlenet_torchvision": (6_624_904, 1.50),
}


@pytest.mark.parametrize("name", sorted(CANONICAL))
def test_totals_match_canonical_counts(name):
    params, gmacs = CANONICAL[name]
    s = summary(get_model(name), (1, 224, 224, 3))
    assert s.total_params == params
    assert round(s.total_macs / 1e9, 2) == gmacs
    top = [layer for layer in s.layers if layer.depth == 1]
    assert sum(layer.params for layer in top) == params
    assert sum(layer.macs for layer in top) == s.total_macs
    assert s.layers[-1].name == "output" and s.layers[-1].shape == (1, 1000)


def chain_fields(layers):
    """The receptive-field recurrence r += (k - 1) j, j *= s along a chain of (k, s)."""
    field, jump, out = 1, 1, []
    for kernel, stride in layers:
        field += (kernel - 1) * jump
        jump *= stride
        out.append((field, jump))
    return out


def test_vgg16_receptive_fields_follow_the_recurrence():
    s = summary(get_model("vgg16", include_top=False), (1, 64, 64, 3))
    rows = {layer.name: layer for layer in s.layers}
    chain, names = [], []
    for stage, size in enumerate((2, 2, 3, 3, 3), start=1):
        for i in range(1, size + 1):
            chain.append((3, 1))
            names.append(f"conv{stage}_{i}")
        chain.append((2, 2))
        names.append(f"pool{stage}")
    for name, (field, jump) in zip(names, chain_fields(chain), strict=True):
        assert rows[name].receptive_field == (field, field), name
        assert rows[name].stride == (jump, jump), name
    assert rows["pool5"].receptive_field == (212, 212)  # the published value


def test_resnet50_receptive_field_follows_the_longest_path():
    s = summary(get_model("resnet50"), (1, 224, 224, 3))
    rows = {layer.name: layer for layer in s.layers}
    chain = [(7, 2), (3, 2)]  # stem conv, max pool
    for stage, blocks in enumerate((3, 4, 6, 3)):
        for b in range(blocks):
            chain += [(1, 1), (3, 2 if (stage > 0 and b == 0) else 1), (1, 1)]
    field, jump = chain_fields(chain)[-1]
    assert rows["stage4"].receptive_field == (field, field) == (427, 427)
    assert rows["stage4"].stride == (jump, jump) == (32, 32)
    assert rows["head"].receptive_field is None  # after the global average pool


def gradient_field(module, variables, shape):
    """Extent of the input pixels that reach the centre output (union over inputs)."""

    def centre(x):
        y = module.apply(variables, x[None])
        return y[0, y.shape[1] // 2, y.shape[2] // 2].sum()

    xs = jax.random.normal(jax.random.key(0), (16, *shape))
    grads = jax.jit(jax.vmap(jax.grad(centre)))(xs)
    support = np.asarray(jnp.any(grads != 0, axis=(0, 3)))
    rows, cols = np.nonzero(support)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


@pytest.mark.parametrize(
    "module",
    [
        BasicBlock(4, strides=2),
        Bottleneck(2, strides=2),
        BasicBlock(4, strides=2, residual=False),
        InceptionBlock((2, 2, 2, 2, 2, 2)),
        InceptionBlock((2, 2, 2, 2, 2, 2), big_kernel=3),
        nn.Conv(3, (3, 3), kernel_dilation=2),
        nn.Sequential([nn.Conv(3, (3, 5), strides=(1, 2)), nn.Conv(3, (3, 3))]),
    ],
    ids=["basic", "bottleneck", "plain", "inception5", "inception3", "dilated", "rect"],
)
def test_receptive_field_matches_gradient_support(module):
    shape = (23, 23, 3)
    variables = random_variables(module, (1, *shape))
    s = summary(module, (1, *shape))
    assert s.layers[-1].receptive_field == gradient_field(module, variables, shape)


def test_table_and_rows():
    s = summary(get_model("resnet20"), (1, 32, 32, 3))
    text = s.table(depth=1)
    assert text.splitlines()[0].split() == [
        "Layer",
        "Output",
        "shape",
        "Params",
        "MACs",
        "RF",
        "Stride",
    ]
    assert "stage3" in text and "block0" not in text
    assert "269,722 parameters" in text
    full = str(s)
    assert full.index("stage1") < full.index("block0")  # parents before their blocks
    rows = s.as_dicts()
    assert rows[0]["name"] == "conv1" and rows[0]["params"] == 3 * 3 * 3 * 16
    assert rows[0]["macs"] == 32 * 32 * 16 * 27
    sown = {layer.name: layer for layer in summary(get_model("vgg11"), (1, 32, 32, 3)).layers}
    assert sown["relu1_1"].params == sown["relu1_1"].macs == 0
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        summary(get_model("resnet20"), (32,))
