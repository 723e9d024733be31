"""The images that excite each unit most over a dataset's eval split (or the network's
given images), and their patches.

Mining is one pass over the images with a streaming top-k per unit
(:mod:`convjax.viz.mining`) under any strategy; :func:`collect_patches` is a second
pass that crops the winners at their receptive fields.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from convjax.analysis.network import Network
from convjax.analysis.plan import Plan
from convjax.data import pipeline
from convjax.models.taps import extract_features
from convjax.train.parallel import get_strategy
from convjax.viz import mining
from convjax.viz.geometry import crop

OUTSIDE = 0.5  # grey where a receptive field reaches past the image


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


def image_batches(
    images: np.ndarray, batch_size: int, num_images: int | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Model inputs [N, H, W, C] as :func:`eval_batches` gives the eval split: full
    batches, the last one padded with zero images of ``mask`` 0."""
    count = len(images) if num_images is None else min(num_images, len(images))
    for start in range(0, count, batch_size):
        chunk = images[start : min(start + batch_size, count)]
        pad = batch_size - len(chunk)
        yield {
            "image": np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)]),
            "index": np.arange(start, start + batch_size, dtype=np.int32),
            "mask": (np.arange(batch_size) < len(chunk)).astype(np.float32),
        }


def network_batches(
    network: Network, batch_size: int, num_images: int | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """The images to look with: ``network.images`` when given, else the eval split."""
    if network.images is not None:
        return image_batches(network.images, batch_size, num_images)
    return eval_batches(network.dataset, batch_size, num_images)


def mine_topk(
    network: Network,
    plan: Plan,
    *,
    k: int = 9,
    batch_size: int = 64,
    num_images: int | None = None,
    strategy: str = "auto",
) -> tuple[dict[str, mining.TopK], int]:
    """The top-k of every unit of every planned layer over the network's images
    (:func:`network_batches`).

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
    for batch in network_batches(network, batch_size, num_images):
        seen += int(batch["mask"].sum())
        state = step(state, variables, placement.put_batch(batch))
    if seen == 0:
        split = f"the eval split {network.dataset.eval_split!r}"
        raise ValueError(
            f"no images to mine in {split if network.images is None else 'the given images'}"
        )
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
    for batch in network_batches(network, batch_size, last + 1):
        for image, index in zip(batch["image"], batch["index"], strict=True):
            shown = display_image(image, network.dataset) if int(index) in wanted else None
            for layer, row, rank, unit in wanted.get(int(index), []):
                best = topk[layer]
                window = plan.fields[layer].window(best.y[unit, rank], best.x[unit, rank], unit)
                patch, mask = crop(shown, window, fill=OUTSIDE)
                out[layer][0][row][rank], out[layer][1][row][rank] = patch, mask
    return out
