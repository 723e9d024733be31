"""What to look at: layers (spatial taps), the units drawn, their receptive fields.

:func:`make_plan` checks a request against the model by tracing only (nothing is
compiled or initialised), so a bad layer or unit fails in one line first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from convjax.analysis.network import Network
from convjax.models.summary import with_xla_convolutions
from convjax.models.taps import extract_features, flatten_intermediates, list_layers, train_kwargs
from convjax.viz.geometry import Field, receptive_fields

DEFAULT_UNITS = 16


@dataclasses.dataclass(frozen=True)
class Plan:
    """The checked request: layers (spatial taps), the units drawn for each, their
    receptive fields, and the model's input shape ``(H, W, C)``."""

    layers: tuple[str, ...]
    units: dict[str, np.ndarray]
    fields: dict[str, Field]
    image_shape: tuple[int, int, int]
    shapes: dict[str, tuple[int, ...]]


def conv_layers(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
    """Names of the outputs of every ``nn.Conv`` module of ``model``, in call order."""
    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)

    def run(x, capture):
        variables = model.init(
            jax.random.key(0), x, **train_kwargs(model, False), capture_intermediates=capture
        )
        return flatten_intermediates(variables.get("intermediates", {}))

    convs = lambda m, method: isinstance(m, nn.Conv) and method == "__call__"  # noqa: E731
    sown = set(jax.eval_shape(lambda x: run(x, lambda m, method: False), x))
    names = set(jax.eval_shape(lambda x: run(x, convs), x)) - sown
    return [name for name, _ in list_layers(model, tuple(input_shape)) if name in names]


def parse_units(spec: str | Sequence[int] | None, num_units: int, layer: str) -> np.ndarray:
    """``None`` (the first 16), ``'all'``, ``'0-15,32'`` or a list -> unit indices."""
    if spec is None:
        return np.arange(min(num_units, DEFAULT_UNITS))
    if isinstance(spec, str):
        if spec.strip() == "all":
            return np.arange(num_units)
        units: list[int] = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise ValueError(f"--units={spec!r}: use 'all' or ranges like '0-15,32'")
            units += range(int(lo), int(hi or lo) + 1)
    else:
        units = [int(u) for u in spec]
    bad = [u for u in units if not 0 <= u < num_units]
    if bad or not units:
        raise ValueError(f"units {bad or spec!r} out of range for {layer} (0..{num_units - 1})")
    return np.array(sorted(set(units)))


def make_plan(
    network: Network,
    layers: Sequence[str] | None = None,
    units: str | Sequence[int] | None = None,
) -> Plan:
    """Checks ``layers``/``units`` against the model (nothing is compiled)."""
    image_shape = network.image_shape  # no dataset access
    shape = (1, *image_shape)
    shapes = {name: tuple(s.shape) for name, s in list_layers(network.model, shape)}
    layers = list(layers) if layers else conv_layers(network.model, shape)
    unknown = [name for name in layers if name not in shapes]
    if unknown:
        raise ValueError(f"Unknown layer(s) {unknown}; valid taps: {', '.join(shapes)}")
    flat = [name for name in layers if len(shapes[name]) != 4]
    if flat:
        raise ValueError(
            f"Layer(s) {flat} have no spatial axes (shapes {[shapes[n] for n in flat]}); "
            f"choose a convolutional tap: {', '.join(n for n in shapes if len(shapes[n]) == 4)}"
        )

    geometry_model = with_xla_convolutions(network.model)  # the same math, traceable

    def taps(variables, x):
        return extract_features(geometry_model, variables, x, layers)

    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    abstract = jax.eval_shape(lambda v: v, network.variables)
    fields = receptive_fields(taps, abstract, x, image_argnum=1)
    mixed = [name for name in layers if not isinstance(fields[name], Field)]
    if mixed:
        raise ValueError(f"Layer(s) {mixed} mix every image position (no receptive field)")
    return Plan(
        layers=tuple(layers),
        units={name: parse_units(units, shapes[name][-1], name) for name in layers},
        fields=fields,
        image_shape=tuple(image_shape),
        shapes=shapes,
    )


def outputs_logits(network: Network, plan: Plan) -> bool:
    """Whether the model's output is [B, K] (class scores), from its shapes alone."""
    output = jax.eval_shape(
        lambda v, x: network.model.apply(v, x),
        network.variables,
        jax.ShapeDtypeStruct((1, *plan.image_shape), jnp.float32),
    )
    return getattr(output, "ndim", 0) == 2


def grad_cam_layer(plan: Plan) -> str:
    """The last spatial tap of the model (at least 2x2 when there is one)."""
    spatial = [name for name, shape in plan.shapes.items() if len(shape) == 4]
    large = [name for name in spatial if min(plan.shapes[name][1:3]) >= 2]
    return (large or spatial)[-1]


def first_layer_kernel(network: Network, input_shape: Sequence[int]) -> np.ndarray | None:
    """The kernel [kh, kw, C_in, C_out] of the first convolution, if it sees the image."""
    params = network.variables["params"]
    for layer in conv_layers(network.model, input_shape):
        node = params
        for key in layer.split("#")[0].split("/"):
            node = node.get(key, {}) if isinstance(node, Mapping) else {}
        kernel = node.get("kernel") if isinstance(node, Mapping) else None
        if kernel is not None and np.ndim(kernel) == 4 and np.shape(kernel)[2] in (1, 3):
            return np.asarray(kernel)
        return None
    return None
