"""Model-side tools of transfer learning: parameter paths, frozen BatchNorm, head inputs.

- Parameters are addressed by ``/``-joined paths (``stage4/block1/conv2/kernel``)
  and selected with regular expressions (:func:`flat_paths`, :func:`compile_patterns`;
  :data:`BACKBONE` selects everything outside the module named ``head``).
- :func:`frozen_batch_norm`: BatchNorm layers of frozen parameters normalise with
  their running statistics and leave them unchanged, even in training mode.
- Features once: :func:`head_inputs` / :func:`compute_head_inputs` give what a
  model's ``head`` receives (``[B, D]`` embeddings) and :class:`LinearHead` is that
  head alone, so it can be trained on precomputed embeddings and dropped back in.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

PyTree = Any
BACKBONE = r"^(?!head/)"  # every parameter outside the module named 'head'


def flat_paths(tree: Mapping[str, Any]) -> dict[str, Any]:
    """``{'stage1/block0/conv1/kernel': leaf, ...}`` for a nested dict of arrays."""
    return traverse_util.flatten_dict(dict(tree), sep="/") if tree else {}


def unflatten_paths(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flat_paths`: ``/``-joined paths -> a nested dict."""
    return traverse_util.unflatten_dict(dict(flat), sep="/")


def compile_patterns(patterns: Sequence[str], what: str) -> list[re.Pattern]:
    """Regular expressions over parameter paths; a one-line error names ``what`` is wrong."""
    if isinstance(patterns, str):
        raise ValueError(
            f"{what} must be a list of regular expressions; got the string {patterns!r}"
        )
    try:
        return [re.compile(p) for p in patterns]
    except re.error as e:
        raise ValueError(f"{what}: invalid regular expression ({e})") from None


@contextlib.contextmanager
def frozen_batch_norm(freeze: Sequence[str]) -> Iterator[None]:
    """Inside, every ``nn.BatchNorm`` whose parameters match ``freeze`` normalises with
    its running statistics and leaves them unchanged, even in training mode.

    Active while a model is traced (wrap the loss function's body, not the jit call).
    """
    patterns = compile_patterns(freeze, "freeze")

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, nn.BatchNorm):
            return next_fun(*args, **kwargs)
        path = "/".join(module.path)
        if not any(p.search(f"{path}/scale") or p.search(f"{path}/bias") for p in patterns):
            return next_fun(*args, **kwargs)
        if module.use_running_average is None:
            return next_fun(*args, **{**kwargs, "use_running_average": True})
        # Set at construction (as every convjax model does): flax refuses it again at
        # call time, so flip the attribute of this traced instance for the call.
        previous = module.use_running_average
        object.__setattr__(module, "use_running_average", True)
        try:
            return next_fun(*args, **kwargs)
        finally:
            object.__setattr__(module, "use_running_average", previous)

    with nn.intercept_methods(interceptor):
        yield


def head_inputs(
    model: nn.Module, variables: PyTree, x: jax.Array, *, head: str = "head"
) -> jax.Array:
    """What the module ``head`` receives for inputs ``x`` (eval mode): [B, D] embeddings.

    For a ResNet that is the globally pooled last stage; for VGG/AlexNet the ReLU'd
    ``fc7``. Jit it (or use :func:`compute_head_inputs`).
    """
    captured = []

    def capture(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and "/".join(context.module.path) == head:
            captured.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(capture):
        model.apply(variables, x, train=False)
    if not captured:
        raise ValueError(f"{type(model).__name__} has no module named {head!r}")
    return captured[0]


def compute_head_inputs(
    model: nn.Module,
    variables: PyTree,
    images: np.ndarray,
    *,
    batch_size: int = 256,
    head: str = "head",
) -> np.ndarray:
    """:func:`head_inputs` for a whole array of images [N, H, W, C] -> [N, D], in batches."""
    extract = jax.jit(functools.partial(head_inputs, model, head=head))
    n = len(images)
    pad = (-n) % batch_size
    padded = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    chunks = [
        np.asarray(extract(variables, padded[i : i + batch_size]))
        for i in range(0, len(padded), batch_size)
    ]
    return np.concatenate(chunks)[:n]


class LinearHead(nn.Module):
    """The replaced head alone: embeddings [B, D] -> logits [B, num_classes].

    Its parameters sit under ``head`` like a full model's, so they drop into it.
    """

    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return nn.Dense(self.num_classes, name="head")(x).astype(jnp.float32)
