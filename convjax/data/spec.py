"""The ``dataset`` config section resolved and checked once: :class:`DatasetSpec`.

:func:`resolve` fills the defaults, checks every field, parses the preprocessing chains
(:mod:`convjax.data.preprocess`) and the augmentation, and finds the example function --
all before anything is read or compiled, so a bad config fails with one line. The
train and eval pipelines, the metadata and inference all take the same spec; they
accept a config section too and resolve it here, where equal sections share one spec
(so following ``config.dataset`` through a run resolves and checks it once).
"""

from __future__ import annotations

import functools
import json

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from convjax.data import augment
from convjax.data.builders import get_builder
from convjax.data.config import resolve_dataset_config
from convjax.data.examples import ExampleFn, get_example_fn
from convjax.data.preprocess import Chain, parse_chain

RESIZE_MODES = ("stretch", "center_crop")
ON_DECODE_ERROR = ("skip", "fail")
_CHAIN_REPLACES = ("image_size", "channels", "mean", "std")


def _check_fields(config: ml_collections.ConfigDict) -> None:
    if config.resize_mode not in RESIZE_MODES:
        raise ValueError(
            f"dataset.resize_mode must be one of {RESIZE_MODES}; got {config.resize_mode!r}."
        )
    if config.channels not in (None, 1, 3):
        raise ValueError(f"dataset.channels must be 1, 3 or None; got {config.channels!r}.")
    if config.image_size is not None and (
        len(config.image_size) != 2 or min(config.image_size) <= 0
    ):
        raise ValueError(
            f"dataset.image_size must be (H, W) with positive sizes or None; "
            f"got {config.image_size!r}."
        )
    for field in ("mean", "std"):
        value = config[field]
        if value is not None and np.ndim(value) > 1:
            raise ValueError(f"dataset.{field} must be a number or one per channel; got {value!r}.")
    if (config.mean is None) != (config.std is None):
        raise ValueError("Give both dataset.mean and dataset.std, or neither.")
    if config.std is not None and np.any(np.asarray(config.std) <= 0):
        raise ValueError(f"dataset.std must be positive; got {config.std!r}.")
    if config.on_decode_error not in ON_DECODE_ERROR:
        raise ValueError(
            f"dataset.on_decode_error must be one of {ON_DECODE_ERROR}; "
            f"got {config.on_decode_error!r}."
        )
    explicit = config.pp_train is not None or config.pp_eval is not None
    clashing = [f for f in _CHAIN_REPLACES if config[f] is not None]
    if explicit and clashing:
        raise ValueError(
            f"dataset.pp_train/pp_eval replace dataset.{'/'.join(clashing)}: put the resize, "
            "channels and normalize ops in the chains and set those fields to None."
        )


def chain_from_fields(config: ml_collections.ConfigDict) -> str:
    """The chain that ``channels``, ``image_size``/``resize_mode``/``resize_method`` and
    ``mean``/``std`` describe (used when a config gives no ``pp_train``/``pp_eval``)."""
    ops = []
    if config.channels is not None:
        ops.append(f"channels({config.channels})")
    if config.image_size is not None:
        op = "resize" if config.resize_mode == "stretch" else "resize_cover_crop"
        size = tuple(int(d) for d in config.image_size)
        ops.append(f"{op}({size}, method={config.resize_method!r})")
    if config.mean is not None:
        ops.append(f"normalize(mean={_literal(config.mean)}, std={_literal(config.std)})")
    return "|".join(ops)


def _literal(value):
    return tuple(float(v) for v in value) if np.ndim(value) else float(value)


class DatasetSpec:
    """A resolved, checked dataset section (module docstring).

    Attributes:
      config: the section with every default filled in (frozen).
      train_chain, eval_chain: the preprocessing chains.
      augment: the parsed ``dataset.augment`` (batch augmentation in JAX).
      example_fn: the dataset's example function.
    """

    def __init__(self, config: ml_collections.ConfigDict):
        _check_fields(config)
        self.config = ml_collections.FrozenConfigDict(config)
        defaults = {"landmark_permutation": config.landmark_flip_permutation}
        fields_chain = chain_from_fields(config)
        self.train_chain: Chain = parse_chain(_or(config.pp_train, fields_chain), defaults)
        self.eval_chain: Chain = parse_chain(_or(config.pp_eval, fields_chain), defaults)
        self.augment = augment.parse_augment(config.augment)
        self.example_fn: ExampleFn = get_example_fn(config)
        self._builder: tfds.core.DatasetBuilder | None = None
        self.metadata_cache = None  # filled by convjax.data.pipeline.dataset_metadata

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def builder(self) -> tfds.core.DatasetBuilder:
        """The tfds builder, prepared on first use."""
        if self._builder is None:
            self._builder = get_builder(self.config)
        return self._builder

    @property
    def explicit_chains(self) -> bool:
        return self.config.pp_train is not None or self.config.pp_eval is not None

    def __repr__(self) -> str:
        return f"DatasetSpec({self.name!r}, train={self.train_chain}, eval={self.eval_chain})"


def _or(chain, fallback):
    return fallback if chain is None else chain


@functools.lru_cache(maxsize=64)
def _resolve_json(text: str) -> DatasetSpec:
    return DatasetSpec(ml_collections.ConfigDict(json.loads(text)))


def resolve(dataset: ml_collections.ConfigDict | dict | DatasetSpec) -> DatasetSpec:
    """A config section (or a spec, returned as it is) -> its :class:`DatasetSpec`.

    Raises:
      ValueError: a bad field, an unknown preprocessing op or argument, an unknown
        augmentation or example function; one line naming the valid choices.
    """
    if isinstance(dataset, DatasetSpec):
        return dataset
    resolved = resolve_dataset_config(dataset)
    try:
        text = json.dumps(resolved.to_dict(), sort_keys=True)
    except TypeError:  # A field JSON cannot hold: resolve without sharing.
        return DatasetSpec(resolved)
    return _resolve_json(text)
