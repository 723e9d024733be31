"""Feature taps: named intermediate activations of any model, without editing it.

A *layer name* is a submodule's path joined by ``/`` (``conv4_2``,
``stage3/block1/conv2``), naming that submodule's output, or a value the model
sows into the ``'intermediates'`` collection (VGG sows ``relu4_2`` and ``pool1``),
named the same way. ``'output'`` is the model's own output.

    >>> model = get_model("vgg19", include_top=False, pool="avg")
    >>> feats = extract_features(model, variables, images, ["conv4_2", "relu5_1"])
    >>> list_layers(model, (1, 224, 224, 3))[:2]
    [('conv1_1', ShapeDtypeStruct((1, 224, 224, 64), float32)), ('relu1_1', ...)]

Only the requested module outputs are captured (a filtered
``capture_intermediates``); under ``jax.jit`` the layers after the deepest tap
that nothing else needs are dead code and are not computed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

PyTree = Any
OUTPUT = "output"


def flatten_intermediates(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """Flattens an ``'intermediates'`` collection to ``{layer name: value}`` in call order.

    A value sown more than once (a module called twice) becomes ``name#0``, ``name#1`` ...
    A module whose ``__call__`` calls ``super().__call__`` is captured twice with the
    very same output; that counts as one call.
    """
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten_intermediates(value, prefix + (key,)))
            continue
        path = prefix if key == "__call__" else prefix + (key,)
        name = "/".join(path) or OUTPUT
        if isinstance(value, tuple):
            value = tuple(v for i, v in enumerate(value) if i == 0 or v is not value[i - 1])
        if isinstance(value, tuple) and len(value) == 1:
            flat[name] = value[0]
        elif isinstance(value, tuple):
            flat.update({f"{name}#{i}": v for i, v in enumerate(value)})
        else:
            flat[name] = value
    return flat


def _capture_all(module: nn.Module, method_name: str) -> bool:
    return method_name == "__call__"


def _capture_only(names: frozenset[str]) -> Callable[[nn.Module, str], bool]:
    def capture(module: nn.Module, method_name: str) -> bool:
        return method_name == "__call__" and ("/".join(module.path) or OUTPUT) in names

    return capture


def train_kwargs(model: nn.Module, train: bool) -> dict[str, bool]:
    """``{'train': train}`` if the model's ``__call__`` takes ``train`` (convjax models
    do), else ``{}`` so plain flax modules (``nn.Conv``) can be tapped too."""
    try:
        accepts = "train" in inspect.signature(type(model).__call__).parameters
    except (TypeError, ValueError):
        accepts = True
    if not accepts and train:
        raise ValueError(f"{type(model).__name__}.__call__ has no train argument")
    return {"train": train} if accepts else {}


def list_layers(
    model: nn.Module,
    input_shape: Sequence[int],
    dtype: Any = jnp.float32,
    *,
    train: bool = False,
) -> list[tuple[str, PyTree]]:
    """Every tappable layer of ``model`` for inputs ``[B, H, W, C]``, in call order.

    Returns ``[(name, ShapeDtypeStruct pytree)]``; nothing is initialised or
    compiled (``jax.eval_shape``).
    """
    return list(_layer_shapes(model, tuple(input_shape), jnp.dtype(dtype), train).items())


def _layer_shapes(model: nn.Module, shape: tuple[int, ...], dtype: Any, train: bool) -> dict:
    try:
        return _cached_layer_shapes(model, shape, dtype, train)
    except TypeError:  # a model with unhashable attributes
        return _compute_layer_shapes(model, shape, dtype, train)


def _compute_layer_shapes(model: nn.Module, shape: tuple[int, ...], dtype: Any, train: bool):
    call_order: list[str] = []

    def run(x: jax.Array) -> PyTree:
        rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
        variables = model.init(
            rngs, x, **train_kwargs(model, train), capture_intermediates=_capture_all
        )
        flat = flatten_intermediates(variables["intermediates"])
        call_order.extend(flat)  # pytree outputs come back with sorted keys
        return flat

    shapes = jax.eval_shape(run, jax.ShapeDtypeStruct(shape, dtype))
    return {name: shapes[name] for name in call_order}


_cached_layer_shapes = functools.lru_cache(maxsize=64)(_compute_layer_shapes)


def check_layers(model: nn.Module, x: jax.Array, layers: Sequence[str], train: bool = False):
    """Raises ``ValueError`` naming the valid layers if any of ``layers`` is unknown."""
    if isinstance(layers, str):
        raise ValueError(f"layers must be a list of layer names; got the string {layers!r}")
    shapes = _layer_shapes(model, tuple(x.shape), jnp.dtype(x.dtype), train)
    unknown = [name for name in layers if name not in shapes]
    if unknown:
        raise ValueError(
            f"Unknown layer(s) {unknown} for {type(model).__name__}. "
            f"Valid layers: {', '.join(shapes)}"
        )


def apply_with_taps(
    model: nn.Module,
    variables: PyTree,
    x: jax.Array,
    layers: Sequence[str],
    *,
    train: bool = False,
    rngs: Mapping[str, jax.Array] | None = None,
    mutable: Sequence[str] = (),
) -> tuple[PyTree, dict[str, PyTree], dict[str, PyTree]]:
    """Runs ``model`` and returns ``(output, {name: activation}, updated collections)``.

    For tasks that need more than the output (GoogLeNet's auxiliary logits
    ``aux1``/``aux2``) while training updates ``mutable`` collections such as
    ``batch_stats``. Unknown layer names raise a ``ValueError`` listing the valid ones.
    """
    check_layers(model, x, layers, train)
    output, state = model.apply(
        variables,
        x,
        **train_kwargs(model, train),
        rngs=rngs,
        mutable=["intermediates", *mutable],
        capture_intermediates=_capture_only(frozenset(name.split("#")[0] for name in layers)),
    )
    state = dict(state)
    flat = flatten_intermediates(state.pop("intermediates", {}))
    return output, {name: flat[name] for name in layers}, state


def extract_features(
    model: nn.Module,
    variables: PyTree,
    x: jax.Array,
    layers: Sequence[str],
    *,
    train: bool = False,
    rngs: Mapping[str, jax.Array] | None = None,
) -> dict[str, PyTree]:
    """The activations of ``layers`` for inputs ``x``: ``{name: [B, H', W', C'] ...}``.

    Args:
      model: any flax linen module.
      variables: its variables (``{'params': ..., 'batch_stats': ...}``).
      x: the model input, e.g. images [B, H, W, C].
      layers: layer names (see :func:`list_layers`); unknown names raise a
        ``ValueError`` listing the valid ones before anything runs.
      train: run in training mode (BatchNorm batch statistics, Dropout with ``rngs``).
    """
    mutable = ["batch_stats"] if train else []
    _, taps, _ = apply_with_taps(
        model, variables, x, layers, train=train, rngs=rngs, mutable=mutable
    )
    return taps


def feature_extractor(
    model: nn.Module, layers: Sequence[str], *, train: bool = False
) -> Callable[[PyTree, jax.Array], dict[str, PyTree]]:
    """A jitted ``(variables, x) -> {name: activation}`` for a fixed list of layers."""
    layers = tuple(layers)

    @jax.jit
    def extract(variables: PyTree, x: jax.Array) -> dict[str, PyTree]:
        return extract_features(model, variables, x, layers, train=train)

    return extract
