"""Training-mode BatchNorm: values from the formula (numpy), gradients against Flax's
``nn.BatchNorm`` differentiated by JAX, on one device and averaged over 4 devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from convjax.models.blocks import BatchNorm, batch_norm
from convjax.ops.normalization import batch_norm_train

SHAPE = (8, 5, 3, 6)  # [B, H, W, C]


def _data(seed=0, offset=2.0):
    rs = np.random.RandomState(seed)
    x = (rs.randn(*SHAPE) * 3 + offset).astype(np.float32)
    scale = (rs.rand(SHAPE[-1]) + 0.5).astype(np.float32)
    bias = rs.randn(SHAPE[-1]).astype(np.float32)
    weights = rs.randn(*SHAPE).astype(np.float32)  # a loss that weighs every output
    return x, scale, bias, weights


def test_values_follow_the_formula():
    x, scale, bias, _ = _data()
    y, mean, var = batch_norm_train(jnp.asarray(x), scale, bias, 1e-5)
    x64 = x.astype(np.float64)
    mu, sigma2 = x64.mean((0, 1, 2)), x64.var((0, 1, 2))
    np.testing.assert_allclose(mean, mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, sigma2, rtol=1e-5)
    np.testing.assert_allclose(y, (x64 - mu) / np.sqrt(sigma2 + 1e-5) * scale + bias, atol=2e-5)


def _apply(cls, x, scale, bias, weights, axis_name=None):
    """Loss, gradients (params, x) and new batch statistics of one training forward."""
    module = cls(use_running_average=False, momentum=0.9, epsilon=1e-5, axis_name=axis_name)
    stats = {"mean": jnp.full(SHAPE[-1], 0.5), "var": jnp.full(SHAPE[-1], 2.0)}

    def loss(params, x):
        y, updates = module.apply(
            {"params": params, "batch_stats": stats}, x, mutable=["batch_stats"]
        )
        return jnp.sum(jnp.sin(y) * weights[: x.shape[0]]), updates["batch_stats"]

    (value, new_stats), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        {"scale": scale, "bias": bias}, x
    )
    return value, grads, new_stats


@pytest.mark.parametrize("offset", [0.0, 40.0])
def test_gradients_equal_flax_batch_norm(offset):
    x, scale, bias, weights = _data(offset=offset)
    ours = jax.jit(lambda *a: _apply(BatchNorm, *a))(x, scale, bias, weights)
    flax_ = jax.jit(lambda *a: _apply(nn.BatchNorm, *a))(x, scale, bias, weights)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(flax_), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def _on_devices(kind, cls, x, scale, bias, weights):
    def step(scale, bias, x):
        value, (grads, dx), stats = _apply(cls, x, scale, bias, weights, axis_name="d")
        return lax_sum(value), jax.lax.pmean(grads, "d"), dx, stats

    lax_sum = lambda v: jax.lax.psum(v, "d")  # noqa: E731
    if kind == "pmap":
        shards = x.reshape(4, -1, *SHAPE[1:])
        out = jax.pmap(step, axis_name="d", in_axes=(None, None, 0))(scale, bias, shards)
        first = lambda tree: jax.tree.map(lambda v: v[0], tree)  # noqa: E731
        return first(out[:2]), out[2].reshape(SHAPE), first(out[3])
    mesh = Mesh(np.array(jax.devices()[:4]), ("d",))
    out = jax.jit(
        jax.shard_map(
            step,
            mesh=mesh,
            in_specs=(P(), P(), P("d")),
            out_specs=(P(), P(), P("d"), P()),
            check_vma=kind == "shard_map_vma",
        )
    )(scale, bias, x)
    return out[:2], out[2], out[3]


@pytest.mark.parametrize("kind", ["pmap", "shard_map", "shard_map_vma"])
def test_statistics_and_gradients_across_devices_equal_flax(kind):
    assert jax.device_count() >= 4
    x, scale, bias, weights = _data(seed=1)
    ours = _on_devices(kind, BatchNorm, x, scale, bias, weights)
    flax_ = _on_devices(kind, nn.BatchNorm, x, scale, bias, weights)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(flax_), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    # The statistics are the global batch's, the same on every device.
    _, _, stats = ours
    global_mean = x.mean((0, 1, 2))
    np.testing.assert_allclose(stats["mean"], 0.9 * 0.5 + 0.1 * global_mean, rtol=1e-5)


def test_module_keeps_flax_variables_and_eval_values():
    x = jnp.asarray(_data()[0])
    ours = batch_norm(True, None, None, "bn")
    theirs = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, name="bn")
    variables = ours.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
        jnp.shape, theirs.init(jax.random.key(0), x)
    )
    assert isinstance(ours, nn.BatchNorm)  # frozen_batch_norm and interceptors still see it
    variables = {
        "params": {"scale": jnp.arange(1.0, 7.0), "bias": jnp.ones(6)},
        "batch_stats": {"mean": jnp.full(6, 0.5), "var": jnp.full(6, 2.0)},
    }
    evaluate = batch_norm(False, None, None, "bn")
    expected = (np.asarray(x) - 0.5) / np.sqrt(2.0 + 1e-5) * np.arange(1.0, 7.0) + 1.0
    np.testing.assert_allclose(evaluate.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


def test_bfloat16_activations_keep_flax_dtypes():
    x, scale, bias, _ = _data()
    x16 = jnp.asarray(x, jnp.bfloat16)
    for dtype in (None, jnp.bfloat16):
        ours = BatchNorm(use_running_average=False, dtype=dtype)
        theirs = nn.BatchNorm(use_running_average=False, dtype=dtype)
        variables = theirs.init(jax.random.key(0), x16)
        a, _ = ours.apply(variables, x16, mutable=["batch_stats"])
        b, _ = theirs.apply(variables, x16, mutable=["batch_stats"])
        assert a.dtype == b.dtype
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=2e-2)
