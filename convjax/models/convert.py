"""Weights exported from PyTorch / torchvision, loaded into the matching convjax model.

Export once, in an environment with torchvision (no pickle is ever read here)::

    import torchvision, safetensors.torch
    model = torchvision.models.resnet50(weights="IMAGENET1K_V2")
    safetensors.torch.save_file(model.state_dict(), "resnet50.safetensors")

(or ``numpy.savez("resnet50.npz", **{k: v.numpy() for k, v in model.state_dict().items()})``),
then::

    model = get_model("resnet50")
    variables = load_torchvision(model, "resnet50.safetensors")
    logits = model.apply(variables, images)        # images: [B, H, W, 3], NHWC

Supported: ResNet-18/34/50/101/152, VGG-11/13/16/19 (with and without BN),
AlexNet (torchvision's single tower) and GoogLeNet (``googlenet_torchvision``,
with or without its aux heads). What changes on the way:

- convolution kernels OIHW -> HWIO; dense weights [out, in] -> [in, out];
- BatchNorm ``weight``/``bias`` -> ``params`` ``scale``/``bias``, ``running_mean``/
  ``running_var`` -> ``batch_stats`` ``mean``/``var`` (``num_batches_tracked`` dropped);
- the first dense layer after a flatten reads its input in NCHW order in PyTorch
  and NHWC order here, so its rows are permuted;
- padding needs no conversion because the convjax models pad explicitly and
  symmetrically, as PyTorch does (Flax's ``'SAME'`` would pad stride-2
  convolutions on one side only and shift every activation).

torchvision's ImageNet weights expect RGB in [0, 1] normalised with mean
(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); its pretrained GoogLeNet
(``transform_input=True``) re-normalises internally, so for those weights normalise
with mean 0.5 and std 0.5 instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from convjax.models.alexnet import AlexNet
from convjax.models.inception import GoogLeNet
from convjax.models.resnet import ResNet
from convjax.models.vgg import VGG

StateDict = Mapping[str, np.ndarray]
PyTree = Any


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a ``.safetensors`` or ``.npz`` state dict (never pickle) as numpy arrays."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return dict(load_file(path))
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    raise ValueError(
        f"Unsupported weights file {path!r}: expected .safetensors or .npz. PyTorch "
        "checkpoints (.pt/.pth) are pickles and are never loaded; export them with "
        "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')."
    )


# ------------------------------------------------------------------ module names
def _resnet_name(path: tuple[str, ...]) -> str:
    if path == ("head",):
        return "fc"
    if len(path) == 1:
        return path[0]  # conv1, bn1
    stage, block, layer = path
    prefix = f"layer{stage.removeprefix('stage')}.{block.removeprefix('block')}"
    layer = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(layer, layer)
    return f"{prefix}.{layer}"


def _vgg_names(model: VGG) -> dict[str, str]:
    names, index = {}, 0
    for stage, size in enumerate(model.stage_sizes, start=1):
        for i in range(1, size + 1):
            names[f"conv{stage}_{i}"] = f"features.{index}"
            index += 1
            if model.batch_norm:
                names[f"bn{stage}_{i}"] = f"features.{index}"
                index += 1
            index += 1  # ReLU
        index += 1  # pool
    names.update(fc6="classifier.0", fc7="classifier.3", head="classifier.6")
    return names


_ALEXNET_NAMES = {
    "conv1": "features.0",
    "conv2": "features.3",
    "conv3": "features.6",
    "conv4": "features.8",
    "conv5": "features.10",
    "fc6": "classifier.1",
    "fc7": "classifier.4",
    "head": "classifier.6",
}

_INCEPTION_BRANCHES = {
    "b1x1": "branch1",
    "b3x3_reduce": "branch2.0",
    "b3x3": "branch2.1",
    "b5x5_reduce": "branch3.0",
    "b5x5": "branch3.1",
    "pool_proj": "branch4.1",
}


def _googlenet_name(path: tuple[str, ...]) -> str:
    if path == ("head",):
        return "fc"
    parts = [_INCEPTION_BRANCHES.get(p, p) for p in path]
    return ".".join(parts)


def _family(model: nn.Module) -> tuple[Callable[[tuple[str, ...]], str], dict[str, int]]:
    """(flax module path -> torch module name, {flax path: channels of an NCHW flatten})."""
    if isinstance(model, ResNet):
        return _resnet_name, {}
    if isinstance(model, VGG):
        names = _vgg_names(model)
        return lambda path: names["/".join(path)], {"fc6": 512}
    if isinstance(model, AlexNet):
        if model.variant != "torchvision":
            raise ValueError(
                "torchvision has only the single-tower AlexNet (variant='torchvision')"
            )
        return lambda path: _ALEXNET_NAMES["/".join(path)], {"fc6": 256}
    if isinstance(model, GoogLeNet):
        if model.big_kernel != 3:
            raise ValueError(
                "torchvision's GoogLeNet has 3x3 kernels in its '5x5' branch: convert into "
                "get_model('googlenet_torchvision') (big_kernel=3)"
            )
        return _googlenet_name, {"aux1/fc1": 128, "aux2/fc1": 128}
    raise ValueError(
        f"No torchvision layout for {type(model).__name__}; supported: ResNet, VGG, "
        "AlexNet (torchvision variant), GoogLeNet (googlenet_torchvision)"
    )


# ------------------------------------------------------------------ conversion
def _from_torch(
    leaf: str, collection: str, state: StateDict, torch_module: str, flatten_channels: int | None
) -> tuple[str, np.ndarray]:
    """(torch key, value in flax layout) for one flax leaf of ``torch_module``."""
    if collection == "batch_stats":
        key = f"{torch_module}.running_{leaf}"  # mean / var
        return key, state[key]
    if leaf == "scale":
        key = f"{torch_module}.weight"
        return key, state[key]
    if leaf == "bias":
        key = f"{torch_module}.bias"
        return key, state[key]
    key = f"{torch_module}.weight"
    weight = state[key]
    if weight.ndim == 4:  # conv: [O, I, kh, kw] -> [kh, kw, I, O]
        return key, weight.transpose(2, 3, 1, 0)
    if flatten_channels:  # dense after an NCHW flatten: reorder its inputs to NHWC
        out_dim, in_dim = weight.shape
        hw = int(round((in_dim // flatten_channels) ** 0.5))
        weight = weight.reshape(out_dim, flatten_channels, hw, hw).transpose(0, 2, 3, 1)
        weight = weight.reshape(out_dim, in_dim)
    return key, weight.T


def _set_leaf(out: dict, collection: str, path: tuple[str, ...], value: np.ndarray) -> None:
    """Puts ``value`` at ``out[collection][path...]``, creating the nested dicts."""
    node = out.setdefault(collection, {})
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _check_conversion(
    model_name: str, missing: list[str], mismatched: list[str], unused: list[str]
) -> None:
    """Raises one ``ValueError`` naming every missing key, shape mismatch and unused key."""
    problems = []
    if missing:
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        problems.append(f"missing from the state dict: {', '.join(missing[:8])}{more}")
    if mismatched:
        problems.append(f"shape mismatches: {'; '.join(mismatched)}")
    if unused:
        more = f" and {len(unused) - 8} more" if len(unused) > 8 else ""
        problems.append(f"not used by {model_name}: {', '.join(unused[:8])}{more}")
    if problems:
        raise ValueError(
            f"Cannot convert this state dict into {model_name}: "
            + " | ".join(problems)
            + " (pass exclude=['head'] to keep a new classifier, strict=False to ignore extras)"
        )


def convert_torchvision(
    model: nn.Module,
    state_dict: StateDict,
    *,
    exclude: Sequence[str] = (),
    strict: bool = True,
) -> dict[str, PyTree]:
    """A torchvision ``state_dict`` as the variables of ``model`` (numpy float32 arrays).

    Args:
      model: the convjax model with the same structure (``get_model('resnet50')`` ...).
      state_dict: ``{torchvision key: array}``, e.g. from :func:`load_state_dict`.
      exclude: regular expressions of flax paths (``'head'``) to leave out, e.g. a
        classifier being replaced for a new number of classes.
      strict: raise if the state dict has weights the model does not use.

    Raises ``ValueError`` naming the missing keys, unused keys or mismatched shapes.
    """
    torch_name, flattens = _family(model)
    abstract = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x),
        jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32),
    )
    excluded = [re.compile(pattern) for pattern in exclude]
    used: set[str] = set()
    skipped_modules: set[str] = set()
    missing, mismatched = [], []
    out: dict[str, dict] = {}
    for collection in ("params", "batch_stats"):
        flat = jax.tree_util.tree_flatten_with_path(abstract.get(collection, {}))[0]
        for key_path, leaf in flat:
            path = tuple(str(k.key) for k in key_path)
            flax_name = "/".join(path)
            module = path[:-1]
            torch_module = torch_name(module)
            if any(p.match(flax_name) for p in excluded):
                skipped_modules.add(torch_module)
                continue
            try:
                channels = flattens.get("/".join(module))
                key, value = _from_torch(path[-1], collection, state_dict, torch_module, channels)
            except KeyError as e:
                missing.append(f"{e.args[0]} (for {collection}/{flax_name})")
                continue
            used.add(key)
            if tuple(value.shape) != tuple(leaf.shape):
                mismatched.append(
                    f"{key} {tuple(state_dict[key].shape)} -> {flax_name} {tuple(leaf.shape)}"
                )
                continue
            _set_leaf(out, collection, path, np.asarray(value, np.float32))
    unused = sorted(
        k
        for k in set(state_dict) - used
        if not k.endswith("num_batches_tracked")
        and not any(k.startswith(m + ".") for m in skipped_modules)
    )
    _check_conversion(type(model).__name__, missing, mismatched, unused if strict else [])
    return out


def load_torchvision(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    exclude: Sequence[str] = (),
    strict: bool = True,
) -> dict[str, PyTree]:
    """:func:`convert_torchvision` of the ``.safetensors`` / ``.npz`` file at ``path``."""
    return convert_torchvision(model, load_state_dict(path), exclude=exclude, strict=strict)
