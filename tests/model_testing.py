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
