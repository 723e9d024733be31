"""Per-example preprocessing as a chain of named, registered ops (big_vision's pp style).

A chain is one string with ``|`` between ops, or a list of op strings::

    dataset.pp_train = "decode_jpeg_and_inception_crop(224)|flip_lr|normalize('imagenet')"
    dataset.pp_eval = ["decode(3)", "resize_small(256)", "central_crop(224)", "normalize"]

Each op is written ``name`` or ``name(arg, key=value, ...)`` with literal arguments and
is checked when the config is resolved, before anything is read or compiled: an unknown
name lists the valid ones, a bad argument shows the op's signature.

Ops come in three kinds, and a chain lists them in this order:

- ``encoded``: the first op only; it reads the encoded image bytes (``decode``,
  ``decode_jpeg_and_inception_crop``). Without one, the pipeline decodes the image with
  its tfds feature before the dataset's example function.
- ``example``: per-example TensorFlow ops on ``{'image': uint8 [h, w, c], ...}`` inside
  the tf.data graph (crop, resize, flip, one-hot labels). Ops that move the image also
  move ``boxes`` [N, 4] and ``landmarks`` [..., K, 2] (normalised, see
  :mod:`convjax.data.geometry`).
- ``pixel``: elementwise maps of images in 0..1 (``value_range``, ``normalize``),
  applied to whole batches after the pipeline scales them to 0..1 and after
  ``dataset.augment`` (which needs 0..1 images), in TensorFlow or in JAX on device.

Random ops draw from a per-example seed: ``fold_in((seed_base, position), op_index)``,
where ``position`` is the example's place in the host's stream, so the same example of a
resumed run gets the same crop and flip. Ops are registered with :func:`register_op`
(see :mod:`convjax.data.preprocess_ops` for the built-in ones).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tensorflow as tf

from convjax.data.calls import parse_call

KINDS = ("encoded", "example", "pixel")
Example = dict[str, tf.Tensor]


@dataclasses.dataclass(frozen=True)
class OpInfo:
    """A registered op: ``make(**arguments)`` returns the op's function."""

    name: str
    make: Callable[..., Callable]
    kind: str
    random: bool
    decoded: str | None  # for an encoded op: the op doing the same on a decoded image


_OPS: dict[str, OpInfo] = {}


def register_op(
    name: str, *, kind: str = "example", random: bool = False, decoded: str | None = None
) -> Callable[[Callable], Callable]:
    """Decorator registering ``make(**arguments) -> fn`` as the op ``name``.

    ``fn(example) -> example`` (``fn(example, seed)`` for ``random`` ops, ``seed`` an
    int64 [2] stateless seed) for ``encoded``/``example`` ops; ``fn(image) -> image``
    for ``pixel`` ops, written with arithmetic only so it runs on TensorFlow and JAX
    arrays alike. ``make`` validates its arguments (``ValueError``, one line) and has a
    docstring, which is the op's documentation.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}.")

    def register(make: Callable) -> Callable:
        if name in _OPS and _OPS[name].make is not make:
            raise ValueError(f"A preprocessing op is already registered as {name!r}.")
        if not (make.__doc__ or "").strip():
            raise ValueError(f"Preprocessing op {name!r} needs a docstring.")
        _OPS[name] = OpInfo(name, make, kind, random, decoded)
        return make

    return register


def list_ops() -> list[str]:
    """Names of the registered preprocessing ops."""
    _import_builtin_ops()
    return sorted(_OPS)


def op_info(name: str) -> OpInfo:
    _import_builtin_ops()
    if name not in _OPS:
        raise ValueError(f"Unknown preprocessing op {name!r}; valid ops: {', '.join(list_ops())}.")
    return _OPS[name]


def _import_builtin_ops() -> None:
    from convjax.data import preprocess_ops  # noqa: F401  (registers the built-in ops)


def signature(name: str) -> str:
    """``'resize_small(size, method='bilinear', antialias=True)'``."""
    params = inspect.signature(op_info(name).make).parameters.values()
    shown = [p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params]
    return f"{name}({', '.join(shown)})"


@dataclasses.dataclass(frozen=True)
class Op:
    name: str
    kwargs: Mapping[str, Any]
    fn: Callable
    info: OpInfo

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.name}({args})" if args else self.name


def make_op(text: str, defaults: Mapping[str, Any] | None = None) -> Op:
    """One op from its text (``'resize_small(256)'``); ``defaults`` fill arguments the
    op accepts and the text leaves out (the dataset's ``landmark_permutation``)."""
    name, args, kwargs = parse_call(
        text,
        f"Cannot read preprocessing op {text!r}: write name or name(arg, key=value) with "
        f"literal arguments; valid ops: {', '.join(list_ops())}.",
    )
    info = op_info(name)
    params = inspect.signature(info.make).parameters
    try:
        bound = inspect.signature(info.make).bind(*args, **kwargs)
    except TypeError:
        raise ValueError(
            f"Preprocessing op {text.strip()!r}: expected {signature(name)}."
        ) from None
    for key, value in (defaults or {}).items():
        if key in params and key not in bound.arguments:
            bound.arguments[key] = value
    try:
        fn = info.make(*bound.args, **bound.kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Preprocessing op {text.strip()!r}: {error} Expected {signature(name)}."
        ) from None
    return Op(name, dict(bound.arguments), fn, info)


def _split_chain(spec: str | Sequence[str]) -> list[str]:
    if isinstance(spec, str):
        return [part for part in spec.split("|") if part.strip()]
    return [str(part) for part in spec]


@dataclasses.dataclass(frozen=True)
class Chain:
    """A checked chain of ops (module docstring)."""

    ops: tuple[Op, ...]

    def __str__(self) -> str:
        return "|".join(str(op) for op in self.ops)

    @property
    def encoded(self) -> bool:
        """Whether the first op reads the encoded image."""
        return bool(self.ops) and self.ops[0].info.kind == "encoded"

    @property
    def example_ops(self) -> tuple[Op, ...]:
        return tuple(op for op in self.ops if op.info.kind != "pixel")

    @property
    def pixel_ops(self) -> tuple[Op, ...]:
        return tuple(op for op in self.ops if op.info.kind == "pixel")

    def split_at_first_random(self) -> tuple[tuple[Op, ...], tuple[Op, ...]]:
        """(the deterministic example ops before the first random one, the rest): the
        first part can be cached, the second runs every epoch."""
        ops = self.example_ops
        first = next((i for i, op in enumerate(ops) if op.info.random), len(ops))
        return ops[:first], ops[first:]

    def for_decoded_images(self) -> Chain:
        """The same chain on images that are already decoded (inference on arrays)."""
        if not self.encoded:
            return self
        first = self.ops[0]
        params = inspect.signature(op_info(first.info.decoded).make).parameters
        kwargs = {k: v for k, v in first.kwargs.items() if k in params}
        text = f"{first.info.decoded}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
        return Chain((make_op(text), *self.ops[1:]))


def parse_chain(
    spec: str | Sequence[str] | None, defaults: Mapping[str, Any] | None = None
) -> Chain:
    """A chain spec (module docstring) -> a checked :class:`Chain`."""
    ops = tuple(make_op(text, defaults) for text in _split_chain(spec or ""))
    order = [KINDS.index(op.info.kind) for op in ops]
    for i, op in enumerate(ops):
        if op.info.kind == "encoded" and i > 0:
            raise ValueError(
                f"Preprocessing op {op.name!r} reads the encoded image, so it must come first."
            )
        if i and order[i] < order[i - 1]:
            raise ValueError(
                f"Preprocessing op {op.name!r} comes after the pixel op {ops[i - 1].name!r}; "
                "pixel ops (value_range, normalize) run on whole batches, so they go last."
            )
    return Chain(ops)


def apply_example_ops(
    ops: Sequence[Op], example: Example, seed: tf.Tensor | None = None, first_index: int = 0
) -> Example:
    """Runs ``ops`` on one example; random op ``i`` gets ``fold_in(seed, first_index + i)``."""
    for i, op in enumerate(ops):
        if op.info.random:
            if seed is None:
                raise ValueError(f"Preprocessing op {op.name!r} is random and needs a seed.")
            op_seed = tf.random.experimental.stateless_fold_in(seed, first_index + i)
            example = op.fn(example, op_seed)
        else:
            example = op.fn(example)
    return example


def apply_pixel_ops(ops: Sequence[Op], image):
    """Runs the pixel ops on images in 0..1 (TensorFlow or JAX arrays)."""
    for op in ops:
        image = op.fn(image)
    return image
