"""Re-running a function's jaxpr with some operations swapped or some values nudged.

Attribution methods change how one operation back-propagates (deconvnet and guided
backprop change the ReLU's backward rule) or need the gradient with respect to an
intermediate value (Grad-CAM); both are done here on the traced function itself,
so they work for any model without editing it:

- :func:`rewrite` evaluates ``fn``'s jaxpr equation by equation, replacing the
  equations a ``replace`` rule matches (e.g. every ReLU) by another function;
- :func:`with_offsets` turns ``fn(x) -> (out, taps)`` into
  ``g(x, offsets) -> (out, taps)`` where each tap's value is replaced by
  ``value + offset`` everywhere downstream, so ``d out / d offset`` at
  ``offset = 0`` is the gradient of the output with respect to the tap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.extend import core as jex_core

from convjax.viz.geometry import subjaxpr

Rule = Callable[..., Sequence[Any]]
Replace = Callable[[jex_core.JaxprEqn], Rule | None]


def _sub_consts(eqn: jex_core.JaxprEqn) -> list[Any]:
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        value = eqn.params.get(key)
        if isinstance(value, jex_core.ClosedJaxpr):
            return list(value.consts)
    return []


def eval_jaxpr(
    jaxpr: jex_core.Jaxpr,
    consts: Sequence[Any],
    args: Sequence[Any],
    *,
    replace: Replace | None = None,
    offsets: Mapping[Any, Any] | None = None,
) -> list[Any]:
    """Evaluates ``jaxpr`` on ``args``; equations ``replace`` matches run its rule.

    ``offsets`` maps top-level variables to values added to them where they are
    produced. Calls (``jit``, ``custom_jvp_call``, ``custom_vjp_call`` ...) are
    inlined, so their custom derivative rules give way to autodiff of their bodies.
    """
    env: dict[Any, Any] = {}

    def read(var: Any) -> Any:
        return var.val if isinstance(var, jex_core.Literal) else env[var]

    for var, value in zip(jaxpr.constvars, consts, strict=True):
        env[var] = value
    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = value
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        rule = replace(eqn) if replace is not None else None
        sub = subjaxpr(eqn) if rule is None else None
        if rule is not None:
            outvals = list(rule(*invals))
        elif sub is not None:
            # Calls are inlined: custom derivative rules give way to plain autodiff
            # of what they compute (re-binding a custom_vjp_call is not supported).
            outvals = eval_jaxpr(sub, _sub_consts(eqn), invals, replace=replace)
        else:
            out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outvals = list(out) if eqn.primitive.multiple_results else [out]
        for var, value in zip(eqn.outvars, outvals, strict=True):
            if offsets is not None and var in offsets:
                value = value + offsets[var]
            env[var] = value
    return [read(v) for v in jaxpr.outvars]


def rewrite(fn: Callable[..., Any], replace: Replace) -> Callable[..., Any]:
    """``fn`` with every equation ``replace`` matches computed by its rule instead."""

    def rewritten(*args: Any) -> Any:
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outs = eval_jaxpr(closed.jaxpr, closed.consts, jax.tree.leaves(args), replace=replace)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return rewritten


def with_offsets(fn: Callable[[jax.Array], tuple[Any, Any]]) -> Callable[..., tuple[Any, Any]]:
    """``fn(x) -> (out, taps)`` becomes ``g(x, offsets) -> (out, taps)``.

    ``offsets`` has the structure of ``taps``; each tap is replaced by
    ``tap + offset`` before anything downstream uses it.
    """

    def shifted(x: jax.Array, offsets: Any) -> tuple[Any, Any]:
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(x)
        out_tree = jax.tree.structure(out_shape)
        num_out = len(jax.tree.leaves(out_shape[0]))
        tap_vars = closed.jaxpr.outvars[num_out:]
        if any(not isinstance(v, jex_core.Var) or v in closed.jaxpr.invars for v in tap_vars):
            raise ValueError("every tap must be computed from the input (not a constant or x)")
        if len(set(tap_vars)) != len(tap_vars):
            raise ValueError("two taps are the same value; ask for each once")
        offset_leaves = jax.tree.leaves(offsets)
        if len(offset_leaves) != len(tap_vars):
            raise ValueError(f"got {len(offset_leaves)} offsets for {len(tap_vars)} taps")
        mapping = dict(zip(tap_vars, offset_leaves, strict=True))
        outs = eval_jaxpr(closed.jaxpr, closed.consts, [x], offsets=mapping)
        return jax.tree.unflatten(out_tree, outs)

    return shifted


# ----------------------------------------------------------------- matching rules


def _is_zero_literal(var: Any) -> bool:
    return isinstance(var, jex_core.Literal) and np.ndim(var.val) == 0 and float(var.val) == 0.0


def is_relu(eqn: jex_core.JaxprEqn) -> bool:
    """``jax.nn.relu`` (``flax.linen.relu``) or ``max(x, 0)`` written out."""
    name = eqn.primitive.name
    if name == "custom_jvp_call" and eqn.params.get("name") == "relu":
        return True
    return name == "max" and len(eqn.invars) == 2 and any(map(_is_zero_literal, eqn.invars))


def relu_operand(eqn: jex_core.JaxprEqn, invals: Sequence[Any]) -> Any:
    """The value a matched ReLU equation rectifies."""
    if eqn.primitive.name == "max":
        return invals[1] if _is_zero_literal(eqn.invars[0]) else invals[0]
    return invals[0]


def replace_relus(relu: Callable[[jax.Array], jax.Array]) -> Replace:
    """A rule that computes every ReLU with ``relu`` (e.g. one with another backward)."""

    def replace(eqn: jex_core.JaxprEqn) -> Rule | None:
        if not is_relu(eqn):
            return None
        return lambda *invals: [relu(relu_operand(eqn, invals))]

    return replace
