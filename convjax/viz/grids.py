"""Pictures as arrays: filter grids, feature-map grids, patch grids.

Everything returns float images in [0, 1] (``[H, W, C]`` with C = 1 or 3) laid out
on a grid with a ``pad``-pixel border of ``pad_value`` between cells, except
:func:`filter_figure`, a matplotlib ``Figure`` of labelled filters; writing them
to files is the caller's business (``convjax.runs.images.save_png`` / ``save_figure``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure


def normalise(x: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """Min-max scales ``x`` to [0, 1] over ``axes`` separately for every other index;
    a constant slice becomes 0.5."""
    x = np.asarray(x, np.float64)
    axes = tuple(axes)
    low = x.min(axis=axes, keepdims=True)
    span = x.max(axis=axes, keepdims=True) - low
    safe = np.where(span > 0, span, 1.0)
    return np.where(span > 0, (x - low) / safe, 0.5).astype(np.float32)


def tile(
    images: np.ndarray, columns: int | None = None, pad: int = 1, pad_value: float = 1.0
) -> np.ndarray:
    """images: [N, h, w, C] -> one grid image [rows (h + pad) + pad, cols (w + pad) + pad, C]
    filled row by row (``columns`` defaults to a near-square grid)."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, h, w, C]; got shape {images.shape}")
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), pad_value, np.float32)
    for i, image in enumerate(images):
        top, left = pad + (i // columns) * (h + pad), pad + (i % columns) * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid


def upscale(images: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of [..., h, w, C] by an integer ``factor``."""
    if factor <= 1:
        return np.asarray(images)
    return np.repeat(np.repeat(images, factor, axis=-3), factor, axis=-2)


def display_scale(size: int, target: int = 48) -> int:
    """Integer enlargement that shows a ``size``-pixel cell at about ``target`` pixels."""
    return max(1, math.ceil(target / max(size, 1)))


def first_layer_filters(kernel: np.ndarray) -> np.ndarray:
    """A first-layer kernel [kh, kw, C_in, C_out] (C_in = 1 or 3) -> its filters
    [C_out, kh, kw, C_in], each min-max normalised to [0, 1] on its own."""
    kernel = np.asarray(kernel)
    if kernel.ndim != 4 or kernel.shape[2] not in (1, 3):
        raise ValueError(
            "a first layer's filters need a kernel [kh, kw, C_in, C_out] with C_in = 1 "
            f"or 3; got shape {kernel.shape}"
        )
    return normalise(np.moveaxis(kernel, 3, 0), axes=(1, 2, 3))


def filter_grid(
    kernel: np.ndarray, columns: int | None = None, pad: int = 1, scale: int = 1
) -> np.ndarray:
    """A first-layer kernel [kh, kw, C_in, C_out] (C_in = 1 or 3) -> a grid of its
    C_out filters, each min-max normalised on its own (RGB for 3 inputs, grey for 1)."""
    return tile(upscale(first_layer_filters(kernel), scale), columns, pad)


def filter_figure(kernel: np.ndarray, title: str, cell_inches: float = 1.0) -> Figure:
    """A first-layer kernel [kh, kw, C_in, C_out] as a figure: each filter (min-max
    normalised on its own, as :func:`filter_grid`) in a ``cell_inches`` square cell
    titled with its output channel, on a near-square grid under ``title``."""
    filters = first_layer_filters(kernel)
    n = len(filters)
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    figure = Figure(figsize=(cell_inches * columns, cell_inches * rows + 0.5))
    axes = figure.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            cell = filters[i, ..., 0] if filters.shape[-1] == 1 else filters[i]
            ax.imshow(cell, cmap="gray", interpolation="nearest", vmin=0.0, vmax=1.0)
            ax.set_title(str(i), fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def feature_map_grid(
    act: np.ndarray, columns: int | None = None, pad: int = 1, scale: int = 1
) -> np.ndarray:
    """One image's activation [h, w, C] -> a grey grid of its C maps, each min-max
    normalised on its own."""
    act = np.asarray(act)
    if act.ndim != 3:
        raise ValueError(f"feature maps must be [h, w, C] for one image; got shape {act.shape}")
    maps = normalise(np.moveaxis(act, 2, 0)[..., None], axes=(1, 2, 3))  # [C, h, w, 1]
    return tile(upscale(maps, scale), columns, pad)


def patch_grid(
    patches: Sequence[Sequence[np.ndarray]],
    masks: Sequence[Sequence[np.ndarray]] | None = None,
    pad: int = 2,
    outside: float = 0.5,
    scale: int = 1,
) -> np.ndarray:
    """Rows of image patches (one row per unit, e.g. its top 9) -> one grid image.

    patches[u][i]: [h, w, C] in [0, 1] (sizes may differ between units; each is centred
    in a cell of the largest size); masks[u][i]: [h, w] bool, False where the window
    lies outside the image (shown as ``outside``). An empty slot may be ``None``.
    """
    cells = [p for row in patches for p in row if p is not None]
    if not cells:
        raise ValueError("no patches to show")
    height = max(p.shape[0] for p in cells)
    width = max(p.shape[1] for p in cells)
    channels = cells[0].shape[2]
    columns = max(len(row) for row in patches)
    grid = np.full((len(patches) * columns, height, width, channels), outside, np.float32)
    for u, row in enumerate(patches):
        for i, patch in enumerate(row):
            if patch is None:
                continue
            patch = np.clip(np.asarray(patch, np.float32), 0.0, 1.0)
            if masks is not None and masks[u][i] is not None:
                patch = np.where(np.asarray(masks[u][i])[..., None], patch, outside)
            top, left = (height - patch.shape[0]) // 2, (width - patch.shape[1]) // 2
            grid[u * columns + i, top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    return tile(upscale(grid, scale), columns, pad)
