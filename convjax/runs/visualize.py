"""What a ConvNet learned, as a folder of pictures: the driver behind experiments/visualize.py.

For a trained workdir (the model rebuilt from its ``config.json`` and checkpoint) or a
zoo model (random weights, or converted torchvision weights), :func:`visualize`
writes to an output folder:

- ``topk_<layer>.png``: for each drawn unit (row) the 9 image patches that excite it
  most over the eval split (or the given image files), each cropped at the unit's
  exact receptive field (grey where the field reaches past the image border);
  ``topk.npz`` holds the top-k (value, image index, y, x) of *every* unit of every
  mined layer;
- ``filters.png``: the first convolution's filters;
- ``featuremaps_<layer>.png``: every channel of each layer for the first image;
- ``attributions.png``: for the first few images and the predicted class, saliency,
  deconvnet, guided backprop, Grad-CAM, occlusion and integrated gradients;
- ``activation_max_<layer>.png``: images optimised to excite the drawn units
  (through the generic train step), when ``maximize_steps > 0``;
- ``index.html`` showing all of them, and ``visualize.json`` with the figures.

The analysis itself (the plan, mining, attributions, activation
maximisation) is :mod:`convjax.analysis`; this module turns a workdir or a zoo model
into a :class:`~convjax.analysis.network.Network` and its results into files.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from convjax.analysis.attributions import attribution_figure, feature_map_pictures
from convjax.analysis.maximise import SMOOTH, maximise_units
from convjax.analysis.mining import OUTSIDE, collect_patches, mine_topk, network_batches
from convjax.analysis.network import Network, zoo_dataset
from convjax.analysis.plan import (
    Plan,
    first_layer_kernel,
    grad_cam_layer,
    make_plan,
    outputs_logits,
)
from convjax.data.config import resolve_dataset_config
from convjax.models import get_model
from convjax.models.convert import load_torchvision
from convjax.models.taps import train_kwargs
from convjax.runs import workdir as workdirs
from convjax.runs.files import replace_file
from convjax.runs.images import save_figure, save_png
from convjax.runs.inference import model_inputs
from convjax.viz import grids, mining
from convjax.viz.grids import display_scale

# ------------------------------------------------------------------ what to look at


def network_from_workdir(workdir: str, images: Sequence[str] = ()) -> Network:
    """The trained model of ``workdir`` (``config.json`` + latest checkpoint), looking at
    the image files ``images`` (through the eval preprocessing, at the trained input
    shape) or, without them, at the eval split of its dataset, which must then be on
    disk (:class:`~convjax.runs.workdir.DatasetMissingError` in one line otherwise)."""
    try:
        restored = workdirs.restore(workdir)
    except FileNotFoundError as error:
        raise ValueError(f"{error}\n(or look at an untrained zoo model: --model=vgg16)") from None
    config = restored.config
    network = Network(
        model=restored.model,
        variables=restored.variables,
        dataset=resolve_dataset_config(config.dataset),
        description=f"{config.model} trained on {config.dataset.name} (step {restored.step})",
        image_shape=restored.image_shape,
    )
    if images:
        return with_images(network, images, restored.inference_dataset)
    try:
        workdirs.require_dataset(network.dataset)
    except workdirs.DatasetMissingError as error:
        message = f"{error}; or look at image files instead: --images='photos/*.png'"
        raise workdirs.DatasetMissingError(message) from None
    return network


def with_images(
    network: Network, paths: Sequence[str], dataset: ml_collections.ConfigDict | None = None
) -> Network:
    """``network`` looking at the image files ``paths`` (or ``skimage:<name>``) instead
    of the eval split: each goes through ``dataset``'s (default: the network's) eval
    preprocessing to the model's input shape; the dataset need not be on disk."""
    inputs = model_inputs(list(paths), dataset if dataset is not None else network.dataset)
    return dataclasses.replace(network, images=inputs)


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
    h, w = dataset.image_size
    image_shape = (h, w, dataset.channels or 3)
    if weights is not None:
        variables = load_torchvision(model, weights)
        description = f"{name} with weights from {os.path.basename(weights)}"
    else:
        dummy = jnp.zeros((1, *image_shape), jnp.float32)
        init = jax.jit(lambda rng, x: model.init(rng, x, **train_kwargs(model, False)))
        variables = init(jax.random.key(seed), dummy)
        description = f"{name} with random weights (seed {seed})"
    return Network(model, variables, resolve_dataset_config(dataset), description, image_shape)


# ------------------------------------------------------------------ the run


def safe_name(layer: str) -> str:
    return layer.replace("/", "_").replace("#", "_")


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


def _write_filters(out_dir: str, network: Network, plan: Plan) -> list[tuple[str, str, str]]:
    """``filters.png``: the first convolution's filters, each labelled and scaled up."""
    kernel = first_layer_kernel(network, (1, *plan.image_shape))
    if kernel is None:
        return []
    kh, kw, _, count = kernel.shape
    title = f"First-layer filters: {count} of {kh}x{kw}"
    save_figure(grids.filter_figure(kernel, title), os.path.join(out_dir, "filters.png"))
    caption = f"{count} filters {kh}x{kw}, each normalised on its own, numbered by channel."
    return [("First-layer filters", caption, "filters.png")]


def _write_pictures(
    out_dir: str,
    network: Network,
    plan: Plan,
    *,
    attribution_images: int,
    maximize_steps: int,
    batch_size: int,
) -> list[tuple[str, str, str]]:
    """Filters, feature maps, attributions and activation maximisation pictures."""
    sections = _write_filters(out_dir, network, plan)
    n = max(1, attribution_images)
    images = next(network_batches(network, max(batch_size, n)))["image"][:n]
    for layer, picture in feature_map_pictures(network, plan, images[0]).items():
        name = f"featuremaps_{safe_name(layer)}.png"
        save_png(picture, os.path.join(out_dir, name))
        caption = "The first image's maps (up to 64), each normalised on its own."
        sections.append((f"Feature maps: {layer}", caption, name))
    logits = outputs_logits(network, plan)
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


def _write_topk_arrays(out_dir: str, plan: Plan, topk: Mapping[str, mining.TopK]) -> None:
    """``topk.npz``: ``<layer>/<value|index|y|x>`` [units, k] of every mined layer."""
    np.savez(
        os.path.join(out_dir, "topk.npz"),
        **{
            f"{layer}/{field}": getattr(topk[layer], field)
            for layer in plan.layers
            for field in mining.TopK._fields
        },
    )


def _layer_figures(plan: Plan) -> dict[str, dict[str, Any]]:
    """Each mined layer's shape and receptive field (size, jump, first window's start)."""
    return {
        layer: {
            "shape": plan.shapes[layer],
            "receptive_field": plan.fields[layer].size,
            "jump": plan.fields[layer].jump,
            "start": [int(v) for v in plan.fields[layer].channel_bounds()[0]],
        }
        for layer in plan.layers
    }


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
    _write_topk_arrays(out_dir, plan, topk)
    sections = _write_topk(out_dir, network, plan, topk, batch_size)
    sections += _write_pictures(
        out_dir,
        network,
        plan,
        attribution_images=attribution_images,
        maximize_steps=maximize_steps,
        batch_size=batch_size,
    )
    with replace_file(os.path.join(out_dir, "index.html")) as f:
        f.write(_html(f"What {network.description} learned", sections))
    figures = {
        "network": network.description,
        "images_mined": seen,
        "mining_seconds": mined,
        "layers": _layer_figures(plan),
        "files": ["index.html", "topk.npz"] + [path for _, _, path in sections],
    }
    with replace_file(os.path.join(out_dir, "visualize.json")) as f:
        json.dump(figures, f, indent=1)
    return figures
