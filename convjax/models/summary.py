"""Model summary: per layer output shape, parameters, multiply-adds, receptive field, stride.

Like Keras' ``model.summary()``, but everything is derived from the module itself
for a given input shape, and nothing is computed on real data:

- the layers and their output shapes are the feature taps (:mod:`convjax.models.taps`),
  traced abstractly;
- parameters come from ``jax.eval_shape(model.init)``: a module's count is that of
  its whole subtree;
- multiply-adds (MACs, per example) are counted for every ``nn.Conv`` and ``nn.Dense``
  call, intercepted while tracing (``output elements x kernel elements per output``);
  normalisation, activations and pooling are not counted, as is customary;
- receptive field and effective stride come from interpreting the traced jaxpr:
  every value that still has the input's two spatial axes carries the size of the
  input window one of its positions sees and the input distance between neighbouring
  positions; convolutions and pooling windows grow them, element-wise ops and
  concatenation take the largest of their inputs (so parallel branches and skip
  connections are handled), and an op that mixes spatial positions globally (a
  mean over H and W, a flatten into a dense layer) makes the field ``global``.

    >>> print(summary(get_model("vgg16"), (1, 224, 224, 3)))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

from convjax.models.taps import flatten_intermediates, train_kwargs


@dataclasses.dataclass(frozen=True)
class Window:
    """What one position of a value sees of the input: window size and spacing (H, W)."""

    axes: tuple[int, int]  # which axes of the value are the input's H and W
    field: tuple[float, float]
    stride: tuple[float, float]


GLOBAL = "global"  # the value depends on the whole input (spatial axes mixed)
Info = Window | str | None  # None: does not depend on the input


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One row of the summary.

    ``receptive_field`` and ``stride`` are ``(H, W)`` in input pixels, or ``None``
    when the layer sees the whole input (after global pooling or a flatten).
    ``params`` and ``macs`` are 0 for values a model sows (``relu1_1``, ``pool1``).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    params: int
    macs: int
    receptive_field: tuple[int, int] | None
    stride: tuple[int, int] | None

    @property
    def depth(self) -> int:
        return self.name.count("/") + 1


@dataclasses.dataclass(frozen=True)
class Summary:
    """All layers in call order (the model's own ``output`` last) and the totals.

    ``str()`` is the table.
    """

    model: str
    input_shape: tuple[int, ...]
    layers: list[LayerInfo]
    total_params: int
    total_state: int  # non-trainable variables (BatchNorm running statistics)
    total_macs: int

    def table(self, depth: int | None = None) -> str:
        """The summary as text; ``depth=1`` shows top-level layers only."""
        rows = [
            layer for layer in _parents_first(self.layers) if depth is None or layer.depth <= depth
        ]
        header = ("Layer", "Output shape", "Params", "MACs", "RF", "Stride")
        lines = [_format_row(header, [layer_cells(layer) for layer in rows])]
        width = max(len(line) for line in lines[0].splitlines())
        lines.append(
            f"{'=' * width}\n{self.model} on {self.input_shape}: "
            f"{self.total_params:,} parameters, {self.total_state:,} state values, "
            f"{_si(self.total_macs)} multiply-adds per example"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def as_dicts(self) -> list[dict[str, Any]]:
        """The rows as plain dicts (for a DataFrame or JSON)."""
        return [dataclasses.asdict(layer) for layer in self.layers]


def _parents_first(layers: list[LayerInfo]) -> list[LayerInfo]:
    """Call order, except that a module's row comes before its submodules' rows."""
    first: dict[str, int] = {}
    for index, layer in enumerate(layers):
        parts = layer.name.split("/")
        for i in range(1, len(parts) + 1):
            first.setdefault("/".join(parts[:i]), index)
    return sorted(layers, key=lambda layer: (first[layer.name], layer.depth))


def layer_cells(layer: LayerInfo) -> tuple[str, ...]:
    def pair(value: tuple[int, int] | None) -> str:
        if value is None:
            return GLOBAL
        return str(value[0]) if value[0] == value[1] else f"{value[0]}x{value[1]}"

    indent = "  " * (layer.depth - 1)
    short = layer.name.rsplit("/", 1)[-1]
    return (
        indent + short,
        str(layer.shape),
        f"{layer.params:,}" if layer.params else "",
        _si(layer.macs) if layer.macs else "",
        pair(layer.receptive_field),
        pair(layer.stride),
    )


def _format_row(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(  # noqa: E731
        c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
    )
    return "\n".join([fmt(header), "-" * len(fmt(header)), *map(fmt, rows)])


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def summary(
    model: nn.Module,
    input_shape: Sequence[int],
    dtype: Any = jnp.float32,
    *,
    train: bool = False,
) -> Summary:
    """Summarises ``model`` for inputs ``[B, H, W, C]`` (MACs are per example)."""
    input_shape = tuple(input_shape)
    if len(input_shape) < 2:
        raise ValueError(f"input_shape must be [B, H, W, C]; got {input_shape}")
    x = jax.ShapeDtypeStruct(input_shape, jnp.dtype(dtype))
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    call_kwargs = train_kwargs(model, train)
    variables = jax.eval_shape(lambda x: model.init(rngs, x, **call_kwargs), x)
    variables = {k: v for k, v in variables.items() if k != "intermediates"}

    macs: dict[tuple[str, ...], int] = {}
    names: list[str] = []

    def count_macs(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, (nn.Conv, nn.Dense)):
            return next_fun(*args, **kwargs)
        if module.path in _active:  # a subclass's __call__ calling super().__call__
            return next_fun(*args, **kwargs)
        _active.add(module.path)
        try:
            out = next_fun(*args, **kwargs)
        finally:
            _active.discard(module.path)
        kernel = module.get_variable("params", "kernel")
        per_output = math.prod(kernel.shape[:-1])
        macs[module.path] = macs.get(module.path, 0) + math.prod(out.shape[1:]) * per_output
        return out

    _active: set[tuple[str, ...]] = set()

    def run(variables, x):
        with nn.intercept_methods(count_macs):
            _, state = model.apply(
                variables,
                x,
                **call_kwargs,
                rngs=rngs,
                mutable=["intermediates", "batch_stats"] if train else ["intermediates"],
                capture_intermediates=lambda mdl, method: method == "__call__",
            )
        flat = flatten_intermediates(state["intermediates"])
        names.extend(flat)
        return [jax.tree.leaves(value)[0] for value in flat.values()]

    closed = jax.make_jaxpr(run)(variables, x)
    infos = receptive_fields(closed.jaxpr, num_inputs=len(jax.tree.leaves(variables)) + 1)

    params_by_path = _counts_by_path(variables.get("params", {}))
    layers = []
    for name, out_var, aval in zip(names, closed.jaxpr.outvars, closed.out_avals, strict=True):
        path = tuple(name.split("#")[0].split("/")) if name != "output" else ()
        # "output" is the whole model: its totals are in the footer, not on the row.
        is_module = bool(path) and (
            path in params_by_path or any(p[: len(path)] == path for p in macs)
        )
        info = infos.get(out_var) if isinstance(out_var, jex_core.Var) else None
        field = stride = None
        if isinstance(info, Window):
            field = tuple(int(round(f)) for f in info.field)
            stride = tuple(int(round(s)) if s >= 1 else s for s in info.stride)
        layers.append(
            LayerInfo(
                name=name,
                shape=tuple(aval.shape),
                dtype=str(aval.dtype),
                params=params_by_path.get(path, 0) if is_module else 0,
                macs=sum(v for p, v in macs.items() if p[: len(path)] == path) if is_module else 0,
                receptive_field=field,
                stride=stride,
            )
        )
    state_leaves = [v for k, c in variables.items() if k != "params" for v in jax.tree.leaves(c)]
    return Summary(
        model=type(model).__name__,
        input_shape=input_shape,
        layers=layers,
        total_params=params_by_path.get((), 0),
        total_state=sum(math.prod(v.shape) for v in state_leaves),
        total_macs=sum(macs.values()),
    )


def _counts_by_path(params: Any) -> dict[tuple[str, ...], int]:
    """{module path: parameters in its subtree}, including () for the whole model."""
    counts: dict[tuple[str, ...], int] = {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = tuple(str(getattr(k, "key", k)) for k in key_path)[:-1]
        for i in range(len(keys) + 1):
            counts[keys[:i]] = counts.get(keys[:i], 0) + math.prod(leaf.shape)
    return counts


# ---------------------------------------------------------------- receptive fields
_SUBJAXPR_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")
# Primitives that call a sub-jaxpr on exactly their operands (interpreted inside).
_CALL_PRIMS = (
    "jit",
    "pjit",
    "closed_call",
    "core_call",
    "custom_jvp_call",
    "custom_vjp_call",
    "custom_vjp_call_jaxpr",
    "remat",
    "checkpoint",
    "named_call",
)
_WINDOW_PRIMS = ("reduce_window_max", "reduce_window_min", "reduce_window_sum", "reduce_window")
_REDUCE_PRIMS = (
    "reduce_sum",
    "reduce_max",
    "reduce_min",
    "reduce_prod",
    "argmax",
    "argmin",
    "reduce_and",
    "reduce_or",
)


def receptive_fields(jaxpr: jex_core.Jaxpr, num_inputs: int) -> dict[Any, Info]:
    """{var: Info} for every variable of ``jaxpr`` whose last of ``num_inputs``
    inputs is the image [B, H, W, C]."""
    env: dict[Any, Info] = {}
    image = jaxpr.invars[num_inputs - 1]
    env[image] = Window(axes=(1, 2), field=(1.0, 1.0), stride=(1.0, 1.0))
    _interpret(jaxpr, env)
    return env


def _read(env: dict[Any, Info], var: Any) -> Info:
    return env.get(var) if isinstance(var, jex_core.Var) else None


def _interpret(jaxpr: jex_core.Jaxpr, env: dict[Any, Info]) -> None:
    for eqn in jaxpr.eqns:
        ins = [_read(env, v) for v in eqn.invars]
        if all(i is None for i in ins):
            continue
        sub = _subjaxpr(eqn) if eqn.primitive.name in _CALL_PRIMS else None
        if sub is not None and len(sub.invars) == len(eqn.invars):
            inner = dict(zip(sub.invars, ins, strict=True))
            _interpret(sub, inner)
            for outer, var in zip(eqn.outvars, sub.outvars, strict=True):
                env[outer] = _read(inner, var)
            continue
        out = _transfer(eqn, ins)
        for var in eqn.outvars:
            env[var] = out


def _subjaxpr(eqn: Any) -> jex_core.Jaxpr | None:
    for key in _SUBJAXPR_PARAMS:
        value = eqn.params.get(key)
        if isinstance(value, jex_core.ClosedJaxpr):
            return value.jaxpr
        if isinstance(value, jex_core.Jaxpr):
            return value
    return None


def _grow(info: Window, axes: Sequence[int], windows, strides, dilations=None) -> Window:
    """A sliding window over ``axes`` (the value's axes indexed like ``windows``)."""
    field, stride = list(info.field), list(info.stride)
    for i, axis in enumerate(info.axes):
        k = axes.index(axis)
        dilation = dilations[k] if dilations is not None else 1
        field[i] += (windows[k] - 1) * dilation * stride[i]
        stride[i] *= strides[k]
    return Window(info.axes, tuple(field), tuple(stride))


def _widest(infos: Sequence[Info]) -> Info:
    if any(i == GLOBAL for i in infos):
        return GLOBAL
    windows = [i for i in infos if isinstance(i, Window)]
    if not windows:
        return None
    if any(w.axes != windows[0].axes for w in windows):
        return GLOBAL
    field = tuple(max(w.field[d] for w in windows) for d in range(2))
    stride = tuple(max(w.stride[d] for w in windows) for d in range(2))
    return Window(windows[0].axes, field, stride)


def _transfer(eqn: Any, ins: list[Info]) -> Info:  # noqa: C901 (one case per primitive)
    name = eqn.primitive.name
    params = eqn.params
    info = _widest(ins)
    if not isinstance(info, Window):
        return info
    out_shape = eqn.outvars[0].aval.shape
    if name == "conv_general_dilated":
        if ins[1] is not None:  # the kernel depends on the image: give up
            return GLOBAL
        lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
        src = ins[0]
        if tuple(src.axes) != tuple(lhs_spec[2:]):
            return GLOBAL
        kernel = [eqn.invars[1].aval.shape[d] for d in rhs_spec[2:]]
        grown = _grow(
            Window(tuple(lhs_spec[2:]), src.field, src.stride),
            list(lhs_spec[2:]),
            kernel,
            params["window_strides"],
            params["rhs_dilation"],
        )
        lhs_dilation = params["lhs_dilation"]
        stride = tuple(s / d for s, d in zip(grown.stride, lhs_dilation, strict=True))
        return Window(tuple(out_spec[2:]), grown.field, stride)
    if name in _WINDOW_PRIMS:
        axes = list(range(len(params["window_dimensions"])))
        return _grow(
            info,
            axes,
            params["window_dimensions"],
            params["window_strides"],
            params.get("window_dilation"),
        )
    if name in _REDUCE_PRIMS:
        reduced = params["axes"]
        if any(a in reduced for a in info.axes):
            return GLOBAL
        return Window(
            tuple(a - sum(r < a for r in reduced) for a in info.axes), info.field, info.stride
        )
    if name == "slice":
        strides = params["strides"] or (1,) * len(out_shape)
        return _grow(info, list(range(len(strides))), [1] * len(strides), strides)
    if name == "transpose":
        perm = list(params["permutation"])
        return Window(tuple(perm.index(a) for a in info.axes), info.field, info.stride)
    if name == "broadcast_in_dim":
        src_shape = eqn.invars[0].aval.shape
        dims = params["broadcast_dimensions"]
        if any(src_shape[a] != out_shape[dims[a]] for a in info.axes):
            return GLOBAL
        return Window(tuple(dims[a] for a in info.axes), info.field, info.stride)
    if name == "squeeze":
        dims = params["dimensions"]
        if any(a in dims for a in info.axes):
            return GLOBAL
        return Window(
            tuple(a - sum(d < a for d in dims) for a in info.axes), info.field, info.stride
        )
    if name == "reshape":
        src_shape = eqn.invars[0].aval.shape
        last = max(info.axes) + 1
        if tuple(src_shape[:last]) == tuple(out_shape[:last]):
            return info
        return GLOBAL
    if name == "concatenate":
        return GLOBAL if params["dimension"] in info.axes else info
    if name == "dot_general":
        return _dot_general(eqn, ins)
    if name in (
        "pad",
        "rev",
        "gather",
        "scatter",
        "scatter-add",
        "dynamic_slice",
        "dynamic_update_slice",
        "cumsum",
        "cumprod",
        "cummax",
        "sort",
        "fft",
    ):
        if name == "pad":
            return info
        return GLOBAL
    # Element-wise (add, mul, max, select, convert, custom calls without a sub-jaxpr
    # ...): fine as long as the spatial axes keep their sizes.
    for var, i in zip(eqn.invars, ins, strict=True):
        if isinstance(i, Window):
            shape = var.aval.shape
            if len(shape) != len(out_shape) or any(shape[a] != out_shape[a] for a in i.axes):
                return GLOBAL
    return info


def _dot_general(eqn: Any, ins: list[Info]) -> Info:
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
    lhs_rank = len(eqn.invars[0].aval.shape)
    rhs_rank = len(eqn.invars[1].aval.shape)
    lhs_free = [d for d in range(lhs_rank) if d not in lhs_contract and d not in lhs_batch]
    rhs_free = [d for d in range(rhs_rank) if d not in rhs_contract and d not in rhs_batch]
    outs = []
    for side, info in enumerate(ins):
        if info is None:
            continue
        if not isinstance(info, Window):
            return GLOBAL
        contract, batch, free = (
            (lhs_contract, lhs_batch, lhs_free)
            if side == 0
            else (rhs_contract, rhs_batch, rhs_free)
        )
        offset = len(lhs_batch) + (0 if side == 0 else len(lhs_free))
        axes = []
        for a in info.axes:
            if a in contract:
                return GLOBAL
            axes.append(list(batch).index(a) if a in batch else offset + free.index(a))
        outs.append(Window(tuple(axes), info.field, info.stride))
    return _widest(outs)
