"""Pretrained weights merged into a freshly initialised model.

Two sources, neither read through pickle:

- a torchvision state dict exported as ``.safetensors`` / ``.npz``, converted by
  :mod:`convjax.models.convert`;
- a convjax run: its workdir or a checkpoint folder, read through
  :mod:`convjax.checkpoint_layout` (the layout's one owner) without a restore
  target, so a model with another head can take the weights of the one that was
  trained. The newest readable step is used: an unreadable one is named and the
  previous one read, and nothing in the run's folder is changed.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import numpy as np

from convjax.checkpoint_layout import MODEL_STATE, PARAMS, read_newest
from convjax.models.convert import convert_torchvision, load_state_dict
from convjax.models.transfer import compile_patterns, flat_paths, unflatten_paths

PyTree = Any
WEIGHT_FILE_SUFFIXES = (".safetensors", ".npz")


def is_weights_file(source: str) -> bool:
    """Whether ``source`` names a torchvision export (``.safetensors`` / ``.npz``)."""
    return source.endswith(WEIGHT_FILE_SUFFIXES)


def check_source(source: str) -> None:
    """Raises a one-line ``ValueError`` unless ``source`` is a weights file name or an
    existing folder (a workdir or checkpoint folder)."""
    if not (is_weights_file(source) or os.path.isdir(source)):
        raise ValueError(
            f"pretrained={source!r}: expected a .safetensors/.npz file or a "
            "convjax workdir/checkpoint directory that exists"
        )


def _read_weights(path: str) -> dict[str, np.ndarray]:
    """:func:`~convjax.models.convert.load_state_dict`, with a file that cannot be read
    (missing, empty, truncated, not that format) as a one-line ``ValueError``."""
    if not os.path.isfile(path):
        raise ValueError(f"pretrained={path!r}: no such file")
    try:
        return load_state_dict(path)
    except ValueError as error:
        if "Unsupported weights file" in str(error):
            raise
        problem = error
    except Exception as error:  # noqa: BLE001 -- numpy and safetensors raise many kinds
        problem = error
    size = os.path.getsize(path)
    detail = "the file is empty (0 bytes)" if size == 0 else " ".join(str(problem).split())
    if size and path.endswith(".npz") and not zipfile.is_zipfile(path):
        detail = "not an .npz archive (a zip of .npy arrays)"
    kind = "safetensors" if path.endswith(".safetensors") else "numpy .npz"
    raise ValueError(f"pretrained={path!r} is not a readable {kind} file: {detail}")


def load_checkpoint_variables(directory: str | os.PathLike, step: int | None = None) -> PyTree:
    """``{'params': ..., 'batch_stats': ...}`` (numpy) from a convjax orbax checkpoint.

    ``directory`` is a workdir or a checkpoint directory; ``step`` defaults to the
    newest readable one (:func:`convjax.checkpoint_layout.read_newest`).
    """
    step, items = read_newest(directory, step)
    if PARAMS not in items:
        raise ValueError(f"Checkpoint {os.fspath(directory)!r} step {step} has no {PARAMS!r}")
    return {"params": items[PARAMS], **dict(items.get(MODEL_STATE) or {})}


def _merge(
    variables: PyTree, loaded: PyTree, exclude: Sequence[str]
) -> tuple[dict[str, PyTree], list[str]]:
    """``variables`` with each leaf taken from ``loaded`` unless its path matches
    ``exclude``; also returns the problems (missing leaves, other shapes)."""
    patterns = compile_patterns(exclude, "exclude")
    merged: dict[str, PyTree] = {}
    problems = []
    for collection, tree in variables.items():
        have = flat_paths(loaded.get(collection, {}))
        out = {}
        for path, leaf in flat_paths(tree).items():
            if any(p.search(path) for p in patterns):
                out[path] = leaf
            elif path not in have:
                problems.append(f"{collection}/{path} is missing")
            elif np.shape(have[path]) != np.shape(leaf):
                problems.append(
                    f"{collection}/{path} has shape {np.shape(have[path])}, the model "
                    f"{np.shape(leaf)}"
                )
            else:
                out[path] = np.asarray(have[path], leaf.dtype)
        merged[collection] = unflatten_paths(out)
    return merged, problems


def load_pretrained(
    model: nn.Module,
    variables: PyTree,
    source: str | os.PathLike,
    *,
    exclude: Sequence[str] = ("^head/",),
) -> dict[str, PyTree]:
    """``variables`` (a fresh init of ``model``) with every leaf replaced by ``source``'s,
    except paths matching ``exclude`` (searched in each collection, e.g. ``'^head/'``).

    ``source``: a ``.safetensors``/``.npz`` torchvision state dict, or a convjax
    workdir / checkpoint directory. Raises ``ValueError`` naming any parameter of
    ``model`` that ``source`` lacks or has with another shape (exclude it to keep it
    fresh, e.g. a head for a different number of classes).

    Traceable: ``variables`` may be abstract (under ``jax.eval_shape``); the loaded
    leaves are host constants.
    """
    source = os.fspath(source)
    compile_patterns(exclude, "exclude")
    if is_weights_file(source):
        loaded = convert_torchvision(model, _read_weights(source), exclude=list(exclude))
    else:
        loaded = load_checkpoint_variables(source)
    merged, problems = _merge(variables, loaded, exclude)
    if problems:
        raise ValueError(
            f"Cannot load {source!r} into {type(model).__name__}: {'; '.join(problems[:8])}"
            + (f" and {len(problems) - 8} more" if len(problems) > 8 else "")
            + ". Add the paths to exclude (e.g. '^head/' for a new number of classes)."
        )
    return merged


def describe_loaded(variables: PyTree, source: str | os.PathLike, exclude: Sequence[str]) -> str:
    """One line on what :func:`load_pretrained` did with ``variables`` (its result):
    how many tensors and parameters came from ``source`` and which paths were left
    new (``exclude``), e.g. ``Loaded 100 tensors / 11,176,512 parameters from
    resnet18.safetensors; left new: params/head/bias [10], params/head/kernel [512, 10]
    (5,130 parameters)``. Reads shapes only."""
    patterns = compile_patterns(exclude, "exclude")
    tensors = parameters = new_parameters = 0
    new = []
    for collection, tree in variables.items():
        for path, leaf in flat_paths(tree).items():
            size = int(np.prod(np.shape(leaf)))
            if any(p.search(path) for p in patterns):
                new.append(f"{collection}/{path} {list(np.shape(leaf))}")
                new_parameters += size if collection == "params" else 0
            else:
                tensors += 1
                parameters += size if collection == "params" else 0
    left = f"{', '.join(new)} ({new_parameters:,} parameters)" if new else "nothing"
    return (
        f"Loaded {tensors} tensors / {parameters:,} parameters from {os.fspath(source)}; "
        f"left new: {left}"
    )
