"""What a ConvNet learned, as a folder of pictures: the driver behind experiments/visualize.py.

For a trained workdir (the model rebuilt from its ``config.json`` and checkpoint) or a
zoo model (random weights, or converted torchvision weights), :func:`visualize`
writes to an output folder:

- ``topk_<layer>.png``: for each drawn unit (row) the 9 image patches that excite it
  most over the eval split, each cropped at the unit's exact receptive field (grey
  where the field reaches past the image border); ``topk.npz`` holds the top-k
  (value, image index, y, x) of *every* unit of every mined layer;
- ``filters.png``: the first convolution's filters;
- ``featuremaps_<layer>.png``: every channel of each layer for the first eval image;
- ``attributions.png``: for a few eval images and the predicted class, saliency,
  deconvnet, guided backprop, Grad-CAM, occlusion and integrated gradients;
- ``activation_max_<layer>.png``: images optimised to excite the drawn units
  (through the generic train step), when ``maximize_steps > 0``;
- ``index.html`` showing all of them, and ``visualize.json`` with the figures.

Mining is one pass over the eval split with a streaming top-k per unit
(:mod:`convjax.viz.mining`) under any strategy; a second pass crops the winners.
"""

from __future__ import annotations

import dataclasses
import html
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.figure import Figure

from convjax.data import pipeline
from convjax.data.config import IMAGENET_MEAN, IMAGENET_STD, resolve_dataset_config
from convjax.models import get_model
from convjax.models.convert import load_torchvision
from convjax.models.summary import with_xla_convolutions
from convjax.models.taps import (
    apply_with_taps,
    extract_features,
    flatten_intermediates,
    list_layers,
    train_kwargs,
)
from convjax.runs import workdir as workdirs
from convjax.runs.images import save_figure, save_png
from convjax.tasks.activation_max import ActivationMaxTask, frozen_features
from convjax.train.loop import run_steps
from convjax.train.optimizers import make_optimizer
from convjax.train.parallel import JitStrategy, get_strategy
from convjax.train.state import TrainState
from convjax.viz import attribution, grids, mining
from convjax.viz.geometry import Field, crop, receptive_fields

PyTree = Any
DEFAULT_UNITS = 16
OUTSIDE = 0.5  # grey where a receptive field reaches past the image
# Activation maximisation for pictures: strong smoothing (the task's defaults are mild).
SMOOTH = {"tv_weight": 5.0, "l2_weight": 0.1}


# ------------------------------------------------------------------ what to look at


@dataclasses.dataclass(frozen=True)
class Network:
    """A model with its weights and the data to look at it with.

    ``dataset``: a resolved dataset config whose eval split is mined (its mean/std
    undo the normalisation for display).
    """

    model: nn.Module
    variables: PyTree
    dataset: ml_collections.ConfigDict
    description: str


def network_from_workdir(workdir: str) -> Network:
    """The trained model of ``workdir`` (``config.json`` + latest checkpoint)."""
    try:
        restored = workdirs.restore(workdir)
    except FileNotFoundError as error:
        raise ValueError(f"{error}\n(or look at an untrained zoo model: --model=vgg16)") from None
    config = restored.config
    return Network(
        model=restored.model,
        variables=restored.variables,
        dataset=resolve_dataset_config(config.dataset),
        description=f"{config.model} trained on {config.dataset.name} (step {restored.step})",
    )


def zoo_dataset(name: str = "skimage_images", image_size: int = 224, channels: int = 3):
    """The data for a zoo model: ``name``'s first split at ``image_size``, ImageNet
    normalisation (what torchvision weights expect). Default: the photographs that
    ship with scikit-image (offline)."""
    dataset = resolve_dataset_config({"name": name})
    dataset.eval_split = "train" if name == "skimage_images" else dataset.eval_split
    dataset.image_size = (image_size, image_size)
    dataset.resize_mode = "center_crop"
    dataset.channels = channels
    dataset.mean = IMAGENET_MEAN[:channels] if channels == 3 else (0.5,)
    dataset.std = IMAGENET_STD[:channels] if channels == 3 else (0.5,)
    return dataset


def network_from_zoo(
    name: str,
    *,
    weights: str | None = None,
    dataset: ml_collections.ConfigDict | None = None,
    seed: int = 0,
) -> Network:
    """A zoo model: torchvision ``weights`` (``.safetensors``/``.npz``) or random init."""
    dataset = dataset if dataset is not None else zoo_dataset()
    if weights is not None and not os.path.isfile(weights):
        raise ValueError(
            f"weights file {weights!r} not found (a torchvision state dict, "
            "exported as .safetensors or .npz; see docs/models.md)"
        )
    model = get_model(name)
    if weights is not None:
        variables = load_torchvision(model, weights)
        description = f"{name} with weights from {os.path.basename(weights)}"
    else:
        h, w = dataset.image_size
        dummy = jnp.zeros((1, h, w, dataset.channels or 3), jnp.float32)
        init = jax.jit(lambda rng, x: model.init(rng, x, **train_kwargs(model, False)))
        variables = init(jax.random.key(seed), dummy)
        description = f"{name} with random weights (seed {seed})"
    return Network(model, variables, resolve_dataset_config(dataset), description)


# ------------------------------------------------------------------ layers and units


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
    image_shape = pipeline.dataset_metadata(network.dataset).image_shape
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


# ------------------------------------------------------------------ mining


def eval_batches(
    dataset: ml_collections.ConfigDict, batch_size: int, num_images: int | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """The eval split as ``{'image', 'index', 'mask'}`` batches; ``index`` is each image's
    position in the split, ``mask`` 0 for padding and past ``num_images`` images."""
    start = 0
    for batch in pipeline.create_eval_iterator(dataset, global_batch_size=batch_size):
        size = len(batch["mask"])
        index = np.arange(start, start + size, dtype=np.int32)
        mask = batch["mask"].astype(np.float32)
        if num_images is not None:
            mask = mask * (index < num_images)
        if not mask.any():
            return
        yield {"image": batch["image"], "index": index, "mask": mask}
        start += size


def mine_topk(
    network: Network,
    plan: Plan,
    *,
    k: int = 9,
    batch_size: int = 64,
    num_images: int | None = None,
    strategy: str = "auto",
) -> tuple[dict[str, mining.TopK], int]:
    """The top-k of every unit of every planned layer over the eval split.

    Returns ``({layer: TopK (numpy) [units, k]}, number of images seen)``.
    """
    placement = get_strategy(strategy)
    placement.check_batch_size(batch_size)
    model, layers = network.model, plan.layers

    def features(variables, images):
        return extract_features(model, variables, images, layers)

    step_for_axis = lambda axis: mining.make_mining_step(features, axis)  # noqa: E731
    step = mining.compile_mining_step(step_for_axis, placement.name)
    shapes = {name: jax.ShapeDtypeStruct(plan.shapes[name], jnp.float32) for name in layers}
    state = placement.put_state(mining.empty_state(shapes, k))
    variables = placement.put_state(jax.tree.map(np.asarray, network.variables))
    seen = 0
    batches = eval_batches(network.dataset, batch_size, num_images)
    for batch in batches:
        seen += int(batch["mask"].sum())
        state = step(state, variables, placement.put_batch(batch))
    if seen == 0:
        raise ValueError(f"the eval split {network.dataset.eval_split!r} has no images")
    return mining.to_numpy(state), seen


def display_image(image: np.ndarray, dataset: ml_collections.ConfigDict) -> np.ndarray:
    """A network input [H, W, C] back in [0, 1] (the dataset's normalisation undone)."""
    if dataset.mean is not None:
        image = image * np.asarray(dataset.std, np.float32) + np.asarray(dataset.mean, np.float32)
    return np.clip(image, 0.0, 1.0)


def collect_patches(
    network: Network, plan: Plan, topk: Mapping[str, mining.TopK], batch_size: int = 64
) -> dict[str, tuple[list[list[Any]], list[list[Any]]]]:
    """Crops every drawn unit's top images at its receptive field (a second data pass).

    Returns ``{layer: (patches[row][rank] [h, w, C], masks[row][rank] [h, w])}`` with
    ``None`` for empty slots.
    """
    wanted: dict[int, list[tuple[str, int, int, int]]] = {}
    out: dict[str, tuple[list[list[Any]], list[list[Any]]]] = {}
    for layer in plan.layers:
        k = topk[layer].index.shape[1]
        rows = len(plan.units[layer])
        out[layer] = ([[None] * k for _ in range(rows)], [[None] * k for _ in range(rows)])
        for row, unit in enumerate(plan.units[layer]):
            for rank, index in enumerate(topk[layer].index[unit]):
                if index >= 0:
                    wanted.setdefault(int(index), []).append((layer, row, rank, int(unit)))
    last = max(wanted, default=-1)
    for batch in eval_batches(network.dataset, batch_size, last + 1):
        for image, index in zip(batch["image"], batch["index"], strict=True):
            shown = display_image(image, network.dataset) if int(index) in wanted else None
            for layer, row, rank, unit in wanted.get(int(index), []):
                best = topk[layer]
                window = plan.fields[layer].window(best.y[unit, rank], best.x[unit, rank], unit)
                patch, mask = crop(shown, window, fill=OUTSIDE)
                out[layer][0][row][rank], out[layer][1][row][rank] = patch, mask
    return out


def display_scale(size: int, target: int = 48) -> int:
    """Integer enlargement that shows a ``size``-pixel cell at about ``target`` pixels."""
    return max(1, math.ceil(target / max(size, 1)))


def safe_name(layer: str) -> str:
    return layer.replace("/", "_").replace("#", "_")


# ------------------------------------------------------------------ pictures


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


def feature_map_pictures(
    network: Network, plan: Plan, image: np.ndarray, max_maps: int = 64
) -> dict[str, np.ndarray]:
    """{layer: grid of the first ``max_maps`` channels} for one network input [H, W, C]."""
    acts = jax.jit(lambda x: extract_features(network.model, network.variables, x, plan.layers))(
        jnp.asarray(image)[None]
    )
    pictures = {}
    for layer in plan.layers:
        act = np.asarray(acts[layer][0, ..., :max_maps])
        pictures[layer] = grids.feature_map_grid(act, scale=display_scale(min(act.shape[:2]), 48))
    return pictures


def _shown(values: np.ndarray) -> np.ndarray:
    """A signed [H, W, C] map as an image: min-max over the whole map."""
    return grids.normalise(values, axes=(0, 1, 2))


ATTRIBUTIONS = (
    "image",
    "saliency",
    "deconvnet",
    "guided backprop",
    "Grad-CAM",
    "occlusion",
    "integrated gradients",
)


def attribution_maps(
    network: Network, plan: Plan, images: np.ndarray, cam_layer: str
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every attribution for ``images`` [n, H, W, C] and their predicted classes.

    Returns ``({method: [n, H, W] or [n, H, W, C] maps}, predicted [n])``.
    """
    model, variables = network.model, network.variables

    def logits(x):
        return model.apply(variables, x, **train_kwargs(model, False))

    def with_tap(x):  # one forward pass: the tap must feed the logits
        output, taps, _ = apply_with_taps(model, variables, x, [cam_layer])
        return output, taps[cam_layer]

    x = jnp.asarray(images)
    predicted = np.asarray(jnp.argmax(jax.jit(logits)(x), axis=-1))
    h = x.shape[1]
    size = max(2, h // 6)
    grey = (0.5 - np.asarray(network.dataset.mean or 0.0)) / np.asarray(network.dataset.std or 1.0)
    probabilities = lambda x: jax.nn.softmax(logits(x))  # noqa: E731
    maps = {
        "saliency": attribution.saliency_map(attribution.gradient(logits, x, predicted)),
        "deconvnet": attribution.deconvnet(logits, x, predicted),
        "guided backprop": attribution.guided_backprop(logits, x, predicted),
        "Grad-CAM": _grad_cam(with_tap, x, predicted),
        "occlusion": attribution.occlusion(
            probabilities,
            x,
            predicted,
            size=size,
            stride=max(1, size // 2),
            fill=grey,
            batch_size=16,
        ),
        "integrated gradients": jnp.sum(
            jnp.abs(attribution.integrated_gradients(logits, x, predicted, steps=32)), axis=-1
        ),
    }
    return {name: np.asarray(value) for name, value in maps.items()}, predicted


def _grad_cam(with_tap: Callable, x: jax.Array, target: np.ndarray) -> jax.Array:
    """Grad-CAM on the rectified activation: the ReLU after the tap when there is one."""
    try:
        return attribution.grad_cam(with_tap, x, target, after_relu=True)[1]
    except ValueError:  # the tap is rectified already (or not followed by a ReLU)
        return attribution.grad_cam(with_tap, x, target)[1]


def grad_cam_layer(plan: Plan) -> str:
    """The last spatial tap of the model (at least 2x2 when there is one)."""
    spatial = [name for name, shape in plan.shapes.items() if len(shape) == 4]
    large = [name for name in spatial if min(plan.shapes[name][1:3]) >= 2]
    return (large or spatial)[-1]


def attribution_figure(network: Network, plan: Plan, images: np.ndarray, cam_layer: str) -> Figure:
    """One row per image: the image and each attribution of its predicted class."""
    maps, predicted = attribution_maps(network, plan, images, cam_layer)
    n = len(images)
    figure = Figure(figsize=(2.2 * len(ATTRIBUTIONS), 2.4 * n))
    axes = figure.subplots(n, len(ATTRIBUTIONS), squeeze=False)
    for row in range(n):
        shown = display_image(images[row], network.dataset)
        rgb = np.repeat(shown, 3, -1) if shown.shape[-1] == 1 else shown
        for col, name in enumerate(ATTRIBUTIONS):
            ax = axes[row, col]
            ax.axis("off")
            if name == "image":
                ax.imshow(rgb)
                ax.set_title(f"class {predicted[row]}", fontsize=9)
                continue
            value = maps[name][row]
            if value.ndim == 3:  # signed reconstructions: shown as images
                shown_value = _shown(value)
                ax.imshow(shown_value[..., 0] if value.shape[-1] == 1 else shown_value, cmap="gray")
            elif name == "Grad-CAM":
                ax.imshow(rgb)
                ax.imshow(value, cmap="jet", alpha=0.5)
            else:
                ax.imshow(value, cmap="viridis" if name == "occlusion" else "hot")
            if row == 0:
                label = f"Grad-CAM ({cam_layer})" if name == "Grad-CAM" else name
                ax.set_title(label, fontsize=9)
    figure.tight_layout()
    return figure


def maximise_units(
    network: Network,
    plan: Plan,
    layer: str,
    units: np.ndarray,
    steps: int,
    seed: int = 0,
    **task_kwargs: Any,
) -> np.ndarray:
    """Images [len(units), H, W, C] in [0, 1] optimised (through the generic train step)
    to excite each unit of ``layer`` at its centre position (``task_kwargs``: see
    :class:`~convjax.tasks.activation_max.ActivationMaxTask`)."""
    dataset = network.dataset
    mean = np.asarray(dataset.mean if dataset.mean is not None else 0.0, np.float32)
    std = np.asarray(dataset.std if dataset.std is not None else 1.0, np.float32)
    pixel_range = (float(np.min(-mean / std)), float(np.max((1 - mean) / std)))
    shape = (1, *plan.image_shape)
    task = ActivationMaxTask(layer=layer, pixel_range=pixel_range, **task_kwargs)
    features = frozen_features(network.model, network.variables, layer, shape)
    tx = task.make_optimizer({"name": "adam", "learning_rate": 0.05}, steps, make_optimizer)
    start = 0.1 * np.random.default_rng(seed).normal(size=(len(units), *plan.image_shape))
    state = TrainState.create(
        params={"image": jnp.asarray(start, jnp.float32)},
        tx=tx,
        rng=jax.random.key_data(jax.random.key(seed)),
    )
    strategy = JitStrategy()
    batch = strategy.put_batch({"index": np.arange(len(units), dtype=np.int32), "unit": units})
    placed = run_steps(
        strategy.compile_train_step(task.loss_fn(features)),
        strategy.put_state(jax.tree.map(np.array, state)),
        itertools.repeat(batch),
        get_metrics=strategy.get_metrics,
        start_step=0,
        num_steps=steps,
        log_every=steps,
    )
    images = strategy.get_state(placed).params["image"]
    return np.stack([display_image(image, dataset) for image in images])


# ------------------------------------------------------------------ the run


def _html(title: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """An index page: (heading, caption, image file) per section."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, caption, path in sections:
        body += [
            f"<h2>{html.escape(heading)}</h2>",
            f"<p>{html.escape(caption)}</p>",
            f'<img src="{html.escape(path)}" style="max-width:100%">',
        ]
    style = "body{font-family:sans-serif;margin:2em} img{image-rendering:pixelated}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _write_topk(
    out_dir: str, network: Network, plan: Plan, topk: Mapping[str, mining.TopK], batch_size: int
) -> list[tuple[str, str, str]]:
    patches = collect_patches(network, plan, topk, batch_size)
    sections = []
    for layer in plan.layers:
        field = plan.fields[layer]
        cells, masks = patches[layer]
        scale = display_scale(max(field.size))
        name = f"topk_{safe_name(layer)}.png"
        save_png(
            grids.patch_grid(cells, masks, outside=OUTSIDE, scale=scale),
            os.path.join(out_dir, name),
        )
        units = plan.units[layer]
        caption = (
            f"Units {units[0]}..{units[-1]} ({len(units)} of {plan.shapes[layer][-1]}), one per "
            f"row: the {topk[layer].index.shape[1]} images that excite each most, cropped at its "
            f"receptive field ({field.describe()}); grey lies outside the image."
        )
        sections.append((f"Top patches: {layer}", caption, name))
    return sections


def _write_pictures(
    out_dir: str,
    network: Network,
    plan: Plan,
    *,
    attribution_images: int,
    maximize_steps: int,
    batch_size: int,
) -> list[tuple[str, str, str]]:
    sections = []
    kernel = first_layer_kernel(network, (1, *plan.image_shape))
    if kernel is not None:
        save_png(
            grids.filter_grid(kernel, scale=display_scale(kernel.shape[0], 64)),
            os.path.join(out_dir, "filters.png"),
        )
        sections.append(
            (
                "First-layer filters",
                f"{kernel.shape[3]} filters {kernel.shape[0]}x"
                f"{kernel.shape[1]}, each normalised on its own.",
                "filters.png",
            )
        )
    n = max(1, attribution_images)
    images = next(eval_batches(network.dataset, max(batch_size, n)))["image"][:n]
    for layer, picture in feature_map_pictures(network, plan, images[0]).items():
        name = f"featuremaps_{safe_name(layer)}.png"
        save_png(picture, os.path.join(out_dir, name))
        sections.append(
            (
                f"Feature maps: {layer}",
                "The first eval image's maps (up to 64), each normalised on its own.",
                name,
            )
        )
    output = jax.eval_shape(
        lambda v, x: network.model.apply(v, x),
        network.variables,
        jax.ShapeDtypeStruct((1, *plan.image_shape), jnp.float32),
    )
    logits = getattr(output, "ndim", 0) == 2
    if attribution_images > 0 and logits:
        figure = attribution_figure(network, plan, images, grad_cam_layer(plan))
        save_figure(figure, os.path.join(out_dir, "attributions.png"), dpi=80)
        sections.append(
            ("Attributions", "For the predicted class of each image.", "attributions.png")
        )
    if maximize_steps > 0:
        sections += _write_maximised(out_dir, network, plan, maximize_steps, logits=logits)
    return sections


def _write_maximised(
    out_dir: str, network: Network, plan: Plan, steps: int, *, logits: bool
) -> list[tuple[str, str, str]]:
    """Activation maximisation of the last mined layer's first 8 drawn units, and of
    the first 10 classes when the model outputs logits."""
    targets = [(plan.layers[-1], plan.units[plan.layers[-1]][:8])]
    if logits:
        num_classes = plan.shapes["output"][-1]
        targets.append(("output", np.arange(min(10, num_classes))))
    sections = []
    for layer, units in targets:
        images = maximise_units(network, plan, layer, units, steps, **SMOOTH)
        name = f"activation_max_{safe_name(layer)}.png"
        scale = display_scale(plan.image_shape[0], 96)
        tiled = grids.tile(grids.upscale(images, scale), columns=len(units), pad=2)
        save_png(tiled, os.path.join(out_dir, name))
        what = "classes" if layer == "output" else "units (at the centre position)"
        caption = f"Images optimised for {steps} steps to excite {what} {list(units)}."
        sections.append((f"Activation maximisation: {layer}", caption, name))
    return sections


def visualize(
    network: Network,
    out_dir: str,
    *,
    layers: Sequence[str] | None = None,
    units: str | Sequence[int] | None = None,
    k: int = 9,
    num_images: int | None = None,
    batch_size: int = 64,
    strategy: str = "auto",
    attribution_images: int = 4,
    maximize_steps: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Writes every picture of the module docstring to ``out_dir``; returns the figures
    (``visualize.json``). Bad layers/units raise ``ValueError`` before anything compiles."""
    plan = make_plan(network, layers, units)
    os.makedirs(out_dir, exist_ok=True)
    for layer in plan.layers:
        log(f"{layer}: {plan.shapes[layer]}, receptive field {plan.fields[layer].describe()}")
    start = time.perf_counter()
    topk, seen = mine_topk(
        network, plan, k=k, batch_size=batch_size, num_images=num_images, strategy=strategy
    )
    mined = time.perf_counter() - start
    log(
        f"mined the top {k} of {sum(plan.shapes[n][-1] for n in plan.layers)} units over "
        f"{seen} images in {mined:.1f}s"
    )
    np.savez(
        os.path.join(out_dir, "topk.npz"),
        **{
            f"{layer}/{field}": getattr(topk[layer], field)
            for layer in plan.layers
            for field in mining.TopK._fields
        },
    )
    sections = _write_topk(out_dir, network, plan, topk, batch_size)
    sections += _write_pictures(
        out_dir,
        network,
        plan,
        attribution_images=attribution_images,
        maximize_steps=maximize_steps,
        batch_size=batch_size,
    )
    with open(os.path.join(out_dir, "index.html"), "w") as f:
        f.write(_html(f"What {network.description} learned", sections))
    figures = {
        "network": network.description,
        "images_mined": seen,
        "mining_seconds": mined,
        "layers": {
            layer: {
                "shape": plan.shapes[layer],
                "receptive_field": plan.fields[layer].size,
                "jump": plan.fields[layer].jump,
                "start": [int(v) for v in plan.fields[layer].channel_bounds()[0]],
            }
            for layer in plan.layers
        },
        "files": ["index.html", "topk.npz"] + [path for _, _, path in sections],
    }
    with open(os.path.join(out_dir, "visualize.json"), "w") as f:
        json.dump(figures, f, indent=1)
    return figures
