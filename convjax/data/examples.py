"""Example functions: the extension point that maps a decoded tfds example to arrays.

An example function takes one decoded tfds example (a dict of ``tf.Tensor``, images
already decoded to uint8) and the resolved ``dataset`` config, and returns a flat dict
of tensors:

- ``'image'``: uint8 ``[h, w, c]`` (the encoded bytes, passed through, when the
  preprocessing chain starts with a decode op). The chain
  (:mod:`convjax.data.preprocess`) then crops, resizes, converts channels and
  normalises it, moving ``boxes`` and ``landmarks`` with it, so keep them in
  normalised 0..1 coordinates.
- anything else (``'label'``, ``'boxes'``, ``'num_objects'``, ``'identity'``, ...):
  tensors of a **fixed shape**, so examples batch; pad variable-length fields to a
  maximum count and return the count or a mask with them.

Register one for a dataset from the module that owns it::

    from convjax.data.examples import register_example_fn

    @register_example_fn("shapes")          # used whenever config.dataset.name is 'shapes'
    def shapes_example(example, config):
        boxes = example["objects"]["bbox"][: config.max_objects]
        ...
        return {"image": example["image"], "boxes": padded, "num_objects": n}

A config can also pick one by name (``config.dataset.example_fn = 'shapes'``). Datasets
without one use :func:`image_label_example`.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections
import tensorflow as tf

ExampleFn = Callable[[dict, ml_collections.ConfigDict], dict]

_EXAMPLE_FNS: dict[str, ExampleFn] = {}


def register_example_fn(name: str) -> Callable[[ExampleFn], ExampleFn]:
    """Decorator: registers an example function under ``name`` (usually a tfds name)."""

    def register(fn: ExampleFn) -> ExampleFn:
        if name in _EXAMPLE_FNS and _EXAMPLE_FNS[name] is not fn:
            raise ValueError(f"An example function is already registered as {name!r}.")
        _EXAMPLE_FNS[name] = fn
        return fn

    return register


def list_example_fns() -> list[str]:
    """Names of the registered example functions."""
    return sorted(_EXAMPLE_FNS)


def image_label_example(example: dict, config: ml_collections.ConfigDict) -> dict:
    """The default: ``{'image': example[image_key], 'label': int32 example[label_key]}``."""
    for key in (config.image_key, config.label_key):
        if key not in example:
            raise ValueError(
                f"Dataset {config.name!r} has no feature {key!r} (it has {sorted(example)}); "
                "set config.dataset.image_key / label_key, or register an example function "
                "(convjax.data.examples)."
            )
    return {
        "image": example[config.image_key],
        "label": tf.cast(example[config.label_key], tf.int32),
    }


def get_example_fn(config: ml_collections.ConfigDict) -> ExampleFn:
    """The example function for a resolved dataset config (see the module docstring)."""
    if config.example_fn is not None:
        if config.example_fn not in _EXAMPLE_FNS:
            raise ValueError(
                f"Unknown example_fn {config.example_fn!r}; registered: {list_example_fns()} "
                "(or None for the default image/label one)."
            )
        return _EXAMPLE_FNS[config.example_fn]
    base_name = config.name.split(":")[0]
    for candidate in (base_name, base_name.split("/")[0]):
        if candidate in _EXAMPLE_FNS:
            return _EXAMPLE_FNS[candidate]
    return image_label_example
