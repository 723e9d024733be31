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
- receptive field and effective stride are the exact geometry traced from the
  jaxpr by :func:`convjax.viz.geometry.jaxpr_fields` (the union of the windows of
  every path: skip connections, Inception branches; the largest over channels);
  after an op that mixes spatial positions globally (a mean over H and W, a
  flatten into a dense layer) the field is ``global``.

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

from convjax.models.taps import flatten_intermediates, train_kwargs
from convjax.viz.geometry import Field, image_field, jaxpr_fields

GLOBAL = "global"  # how the table shows a layer whose positions see the whole input


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


def with_xla_convolutions(model: nn.Module) -> nn.Module:
    """``model`` with ``conv_impl='xla'`` when it has that field: the same network and
    weights, its convolutions written as ``conv_general_dilated`` so that receptive
    fields can be traced (the CPU implementation gathers im2col patches with index
    arrays, which the geometry tracer does not interpret)."""
    fields = {f.name for f in dataclasses.fields(model)} if dataclasses.is_dataclass(model) else {}
    return model.clone(conv_impl="xla") if "conv_impl" in fields else model


def summary(
    model: nn.Module,
    input_shape: Sequence[int],
    dtype: Any = jnp.float32,
    *,
    train: bool = False,
) -> Summary:
    """Summarises ``model`` for inputs ``[B, H, W, C]`` (MACs are per example)."""
    model = with_xla_convolutions(model)
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

    def run(variables, x):
        with nn.intercept_methods(_mac_counter(macs)):
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
    inputs = [None] * (len(closed.jaxpr.invars) - 1) + [image_field()]
    fields = jaxpr_fields(closed.jaxpr, inputs)
    params_by_path = _counts_by_path(variables.get("params", {}))
    layers = [
        _layer_info(name, aval, field, params_by_path, macs)
        for name, aval, field in zip(names, closed.out_avals, fields, strict=True)
    ]
    state_leaves = [v for k, c in variables.items() if k != "params" for v in jax.tree.leaves(c)]
    return Summary(
        model=type(model).__name__,
        input_shape=input_shape,
        layers=layers,
        total_params=params_by_path.get((), 0),
        total_state=sum(math.prod(v.shape) for v in state_leaves),
        total_macs=sum(macs.values()),
    )


def _mac_counter(macs: dict[tuple[str, ...], int]) -> Any:
    """An interceptor adding each ``nn.Conv``/``nn.Dense`` call's MACs to ``macs``."""
    active: set[tuple[str, ...]] = set()

    def count_macs(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, (nn.Conv, nn.Dense)):
            return next_fun(*args, **kwargs)
        if module.path in active:  # a subclass's __call__ calling super().__call__
            return next_fun(*args, **kwargs)
        active.add(module.path)
        try:
            out = next_fun(*args, **kwargs)
        finally:
            active.discard(module.path)
        kernel = module.get_variable("params", "kernel")
        per_output = math.prod(kernel.shape[:-1])
        macs[module.path] = macs.get(module.path, 0) + math.prod(out.shape[1:]) * per_output
        return out

    return count_macs


def _layer_info(
    name: str,
    aval: Any,
    field: Any,
    params_by_path: dict[tuple[str, ...], int],
    macs: dict[tuple[str, ...], int],
) -> LayerInfo:
    path = tuple(name.split("#")[0].split("/")) if name != "output" else ()
    # "output" is the whole model: its totals are in the footer, not on the row.
    is_module = bool(path) and (path in params_by_path or any(p[: len(path)] == path for p in macs))
    spatial = isinstance(field, Field)
    return LayerInfo(
        name=name,
        shape=tuple(aval.shape),
        dtype=str(aval.dtype),
        params=params_by_path.get(path, 0) if is_module else 0,
        macs=sum(v for p, v in macs.items() if p[: len(path)] == path) if is_module else 0,
        receptive_field=field.size if spatial else None,
        stride=field.jump if spatial else None,
    )


def _counts_by_path(params: Any) -> dict[tuple[str, ...], int]:
    """{module path: parameters in its subtree}, including () for the whole model."""
    counts: dict[tuple[str, ...], int] = {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = tuple(str(getattr(k, "key", k)) for k in key_path)[:-1]
        for i in range(len(keys) + 1):
            counts[keys[:i]] = counts.get(keys[:i], 0) + math.prod(leaf.shape)
    return counts
