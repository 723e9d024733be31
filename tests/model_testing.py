"""Helpers for the model tests: cheap random variables for big models.

Initialising a 10M-parameter model with JAX's PRNG takes seconds on a shared CPU;
filling the abstract shapes (``jax.eval_shape``) from numpy takes milliseconds.
"""

import jax
import jax.numpy as jnp
import numpy as np


def shape_variables(model, shape, dtype=jnp.float32, **kwargs):
    """The variables' ShapeDtypeStructs for inputs of ``shape`` (nothing computed)."""
    x = jax.ShapeDtypeStruct(shape, dtype)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, **kwargs), x)


def param_count(model, shape=(1, 224, 224, 3), **kwargs) -> int:
    variables = shape_variables(model, shape, **kwargs)
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))


def random_variables(model, shape, seed: int = 0, **kwargs):
    """Random variables for ``model``: He-scaled kernels, small biases, BN stats near 1.

    Every leaf is random (not the usual zeros/ones) so tests that compare two
    implementations exercise biases, BatchNorm scales and running statistics too.
    """
    rng = np.random.default_rng(seed)
    abstract = shape_variables(model, shape, **kwargs)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            fan_in = int(np.prod(leaf.shape[:-1]))
            value = rng.normal(size=leaf.shape) * np.sqrt(2.0 / fan_in)
        elif "'var'" in name:
            value = rng.uniform(0.5, 1.5, size=leaf.shape)
        elif "'scale'" in name:
            value = rng.uniform(0.5, 1.5, size=leaf.shape)
        else:  # biases, BatchNorm means
            value = rng.normal(size=leaf.shape) * 0.1
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def conv2d_reference(x, kernel, bias=None, stride=1, padding=0, groups=1):
    """Cross-correlation in numpy, PyTorch semantics, NHWC / HWIO.

    x [B, H, W, Cin] * kernel [kh, kw, Cin / groups, Cout] (+ bias [Cout]) with
    symmetric zero padding -> [B, H', W', Cout].
    """
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    kernel = np.asarray(kernel, np.float64)
    kh, kw, cin_g, cout = kernel.shape
    h = (x.shape[1] - kh) // stride + 1
    w = (x.shape[2] - kw) // stride + 1
    cout_g = cout // groups
    out = np.zeros((x.shape[0], h, w, cout))
    for g in range(groups):
        xs = x[..., g * cin_g : (g + 1) * cin_g]
        ks = kernel[..., g * cout_g : (g + 1) * cout_g]
        for i in range(kh):
            for j in range(kw):
                patch = xs[
                    :, i : i + stride * (h - 1) + 1 : stride, j : j + stride * (w - 1) + 1 : stride
                ]
                out[..., g * cout_g : (g + 1) * cout_g] += patch @ ks[i, j]
    return out if bias is None else out + np.asarray(bias)


def batch_norm_reference(x, params, stats, eps=1e-5):
    """Inference BatchNorm in numpy with running statistics."""
    scale, bias = np.asarray(params["scale"]), np.asarray(params["bias"])
    mean, var = np.asarray(stats["mean"]), np.asarray(stats["var"])
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def max_pool_reference(x, window, stride, padding=0, ceil_mode=False):
    """PyTorch's MaxPool2d written from its definition, with loops, NHWC."""
    b, h, w, c = x.shape

    def out_size(n):
        span = n + 2 * padding - window
        o = (int(np.ceil(span / stride)) if ceil_mode else span // stride) + 1
        if ceil_mode and (o - 1) * stride >= n + padding:
            o -= 1
        return o

    oh, ow = out_size(h), out_size(w)
    y = np.full((b, oh, ow, c), -np.inf)
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * stride - padding, j * stride - padding
            win = x[:, max(h0, 0) : h0 + window, max(w0, 0) : w0 + window]
            y[:, i, j] = win.max(axis=(1, 2))
    return y
