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
    outvars: Sequence[Any] | None = None,
) -> list[Any]:
    """Evaluates ``jaxpr`` on ``args``; equations ``replace`` matches run its rule.

    ``offsets`` maps top-level variables to values added to them where they are
    produced; ``outvars`` (default: the jaxpr's) are the variables returned. Calls
    (``jit``, ``custom_jvp_call``, ``custom_vjp_call`` ...) are inlined, so their
    custom derivative rules give way to autodiff of their bodies.
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
    return [read(v) for v in (jaxpr.outvars if outvars is None else outvars)]


def rewrite(fn: Callable[..., Any], replace: Replace) -> Callable[..., Any]:
    """``fn`` with every equation ``replace`` matches computed by its rule instead."""

    def rewritten(*args: Any) -> Any:
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outs = eval_jaxpr(closed.jaxpr, closed.consts, jax.tree.leaves(args), replace=replace)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return rewritten


def with_offsets(
    fn: Callable[[jax.Array], tuple[Any, Any]], *, after_relu: bool = False
) -> Callable[..., tuple[Any, Any]]:
    """``fn(x) -> (out, taps)`` becomes ``g(x, offsets) -> (out, taps)``.

    ``offsets`` has the structure of ``taps``; each tap is replaced by
    ``tap + offset`` before anything downstream uses it. With ``after_relu`` every
    tap must be the input of a ReLU, and the ReLU's output is the value returned
    and shifted instead (the rectified activation of a pre-activation tap).
    """

    def shifted(x: jax.Array, offsets: Any) -> tuple[Any, Any]:
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(x)
        jaxpr = closed.jaxpr
        num_out = len(jax.tree.leaves(out_shape[0]))
        tap_vars = list(jaxpr.outvars[num_out:])
        if any(not isinstance(v, jex_core.Var) or v in jaxpr.invars for v in tap_vars):
            raise ValueError("every tap must be computed from the input (not a constant or x)")
        if after_relu:
            tap_vars = [_relu_of(jaxpr, v) for v in tap_vars]
        used = _ancestors(jaxpr, jaxpr.outvars[:num_out])
        if any(v not in used for v in tap_vars):
            raise ValueError(
                "a tap does not feed the output: compute both in one forward pass "
                "(e.g. convjax.models.taps.apply_with_taps), not in two calls"
            )
        if len(set(tap_vars)) != len(tap_vars):
            raise ValueError("two taps are the same value; ask for each once")
        offset_leaves = jax.tree.leaves(offsets)
        if len(offset_leaves) != len(tap_vars):
            raise ValueError(f"got {len(offset_leaves)} offsets for {len(tap_vars)} taps")
        mapping = dict(zip(tap_vars, offset_leaves, strict=True))
        outvars = [*jaxpr.outvars[:num_out], *tap_vars]
        outs = eval_jaxpr(jaxpr, closed.consts, [x], offsets=mapping, outvars=outvars)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return shifted


def _ancestors(jaxpr: jex_core.Jaxpr, outvars: Sequence[Any]) -> set[Any]:
    """Every top-level variable that ``outvars`` are computed from (themselves included)."""
    needed = {v for v in outvars if isinstance(v, jex_core.Var)}
    for eqn in reversed(jaxpr.eqns):
        if any(v in needed for v in eqn.outvars):
            needed.update(v for v in eqn.invars if isinstance(v, jex_core.Var))
    return needed


def _relu_of(jaxpr: jex_core.Jaxpr, var: Any) -> Any:
    """The output variable of the ReLU applied to ``var`` (a top-level equation)."""
    for eqn in jaxpr.eqns:
        if is_relu(eqn) and var in eqn.invars:
            return eqn.outvars[0]
    raise ValueError("the tap is not the input of a ReLU; use after_relu=False")


# ----------------------------------------------------------------- matching rules


def _is_zero_literal(var: Any) -> bool:
    return isinstance(var, jex_core.Literal) and np.ndim(var.val) == 0 and float(var.val) == 0.0


def is_relu(eqn: jex_core.JaxprEqn) -> bool:
    """``max(x, 0)``, or a call whose whole body is one (``jax.nn.relu`` and
    ``flax.linen.relu`` trace to a ``custom_jvp_call`` of a ``jit`` of ``max(x, 0)``)."""
    if eqn.primitive.name == "max":
        return len(eqn.invars) == 2 and any(map(_is_zero_literal, eqn.invars))
    sub = subjaxpr(eqn)
    return (
        sub is not None
        and len(sub.eqns) == 1
        and len(eqn.invars) == 1
        and is_relu(sub.eqns[0])
        and list(sub.outvars) == list(sub.eqns[0].outvars)
    )


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
