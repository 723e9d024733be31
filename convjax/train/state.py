"""The training state: everything a step reads and writes, as one pytree."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """step: scalar int32; params: the optimised pytree (weights, or an image);
    model_state: non-trainable collections (``batch_stats``); opt_state: the
    optimizer's state; rng: the run's base PRNG key (uint32 [2]), folded with the
    step and device index inside the step. ``tx`` is static (not a pytree leaf)."""

    step: jax.Array
    params: PyTree
    model_state: PyTree
    opt_state: PyTree
    rng: jax.Array
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(
        cls,
        *,
        params: PyTree,
        tx: optax.GradientTransformation,
        rng: jax.Array,
        model_state: PyTree | None = None,
    ) -> TrainState:
        return cls(
            step=jax.numpy.zeros((), jax.numpy.int32),
            params=params,
            model_state=model_state if model_state is not None else {},
            opt_state=tx.init(params),
            rng=rng,
            tx=tx,
        )

    def checkpoint_items(self) -> dict[str, PyTree]:
        """The pytree that is saved (everything but the static optimizer)."""
        return {
            "step": self.step,
            "params": self.params,
            "model_state": self.model_state,
            "opt_state": self.opt_state,
            "rng": self.rng,
        }

    def replace_from_checkpoint(self, items: dict[str, PyTree]) -> TrainState:
        return self.replace(**items)
