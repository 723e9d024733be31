"""Optimisers of pixels: a projection onto the valid range and a safeguarded L-BFGS.

Both are ``optax.GradientTransformation``s on any pytree of images ``[N, H, W, C]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def keep_in_range(low: float = 0.0, high: float = 1.0) -> optax.GradientTransformation:
    """Makes the final update land inside [low, high]: ``clip(p + u) - p`` (a projection).

    Chained after any optimizer, it keeps pixels valid at every step.
    """

    def init_fn(params):
        return optax.EmptyState()

    def update_fn(updates, state, params):
        if params is None:
            raise ValueError("keep_in_range needs the params to project the update")
        projected = jax.tree.map(lambda p, u: jnp.clip(p + u, low, high) - p, params, updates)
        return projected, state

    return optax.GradientTransformation(init_fn, update_fn)


def safeguarded_lbfgs(
    learning_rate: float = 1.0, memory_size: int = 10, max_step: float = 0.05
) -> optax.GradientTransformation:
    """``optax.lbfgs`` without a line search, kept to descent steps of bounded size.

    Without a line search a quasi-Newton step can point uphill (negative curvature
    in the memory) or be far too long; here such a step is replaced by steepest
    descent, and every step is scaled so no pixel moves by more than ``max_step``
    (a trust region). The memory is built from the actual parameter differences, so
    it stays consistent with the scaled steps.
    """
    inner = optax.lbfgs(learning_rate, memory_size=memory_size, linesearch=None)

    def update_fn(grads, state, params=None):
        direction, state = inner.update(grads, state, params)
        descent = optax.tree.vdot(direction, grads) < 0

        def largest(tree):
            return jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in jax.tree.leaves(tree)]))

        scale = jnp.minimum(1.0, max_step / jnp.maximum(largest(direction), 1e-30))
        steepest = max_step / jnp.maximum(largest(grads), 1e-30)
        updates = jax.tree.map(
            lambda d, g: jnp.where(descent, scale * d, -steepest * g), direction, grads
        )
        return updates, state

    return optax.GradientTransformation(inner.init, update_fn)
