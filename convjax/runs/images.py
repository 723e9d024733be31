"""Image files: read, load at a size, save PNGs, picture panels and cost curves.

Images are float32 RGB arrays ``[H, W, 3]`` with values in [0, 1]. An image is named
by a file path or by ``skimage:<name>`` for an image that ships with scikit-image
(``skimage:chelsea``, ``skimage:astronaut``, ``skimage:immunohistochemistry``...), so
everything runs offline.

Plots are drawn on their own :class:`matplotlib.figure.Figure` (no pyplot state,
no backend switch), so this module is safe to use from notebooks and threads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from convjax.ops.images import fit_size, resize_image, to_rgb_float, to_uint8
from convjax.runs.files import replace_file

# scikit-image data images that are inside the installed package (no download).
BUNDLED_IMAGES = (
    "astronaut",
    "brick",
    "camera",
    "cat",
    "chelsea",
    "coffee",
    "colorwheel",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "rocket",
)
SKIMAGE_PREFIX = "skimage:"


def _bundled_choices() -> str:
    return ", ".join(f"{SKIMAGE_PREFIX}{n}" for n in BUNDLED_IMAGES)


def read_image(spec: str) -> np.ndarray:
    """Reads ``spec`` (a file path or ``skimage:<name>``) -> float32 [H, W, 3] in [0, 1].

    Every mode is read at its range (16-bit grey divided by 65535; palette, grey with
    alpha and CMYK converted to RGB). A file that is not a readable image raises a
    one-line ``ValueError`` naming it and what is wrong."""
    if spec.startswith(SKIMAGE_PREFIX):
        name = spec[len(SKIMAGE_PREFIX) :]
        if name not in BUNDLED_IMAGES:
            raise ValueError(f"Unknown bundled image {name!r}; valid: {_bundled_choices()}")
        import skimage.data

        return to_rgb_float(getattr(skimage.data, name)())
    if not os.path.exists(spec):
        raise ValueError(
            f"image {spec!r} does not exist; give a file path or one of {_bundled_choices()}"
        )
    try:
        with Image.open(spec) as im:
            return to_rgb_float(_pixels(im))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"image {spec!r} cannot be read: {_problem(spec, error)}") from None


def _pixels(im: Image.Image) -> np.ndarray:
    """The decoded pixels at their full range: 16-bit grey (``I;16*``, ``I``) as uint16,
    32-bit float (``F``) as is, every other mode (palette, LA, CMYK, ...) as 8-bit RGB."""
    if im.mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    if im.mode == "I":  # 16-bit grey PNGs in some Pillow versions (values 0..65535)
        return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
    if im.mode == "F":
        return np.asarray(im, np.float32)
    return np.asarray(im.convert("RGB"))


def _problem(path: str, error: BaseException) -> str:
    """What is wrong with an image file, in a few words."""
    if os.path.isdir(path):
        return "it is a folder"
    if os.path.getsize(path) == 0:
        return "the file is empty (0 bytes)"
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image file Pillow knows (a text file, or another format?)"
    return f"{' '.join(str(error).split()) or type(error).__name__} (a damaged or truncated file?)"


def load_image(spec: str, size: int | Sequence[int] | None = None) -> np.ndarray:
    """Reads and resizes an image -> float32 [H, W, 3] in [0, 1].

    size: ``None`` keeps the file's size; an int is the longer side (aspect kept);
    a pair is the exact (H, W).
    """
    image = read_image(spec)
    if size is None:
        return image
    target = fit_size(image.shape, size) if isinstance(size, int) else tuple(size)
    return resize_image(image, target)


def save_png(image: np.ndarray, path: str | os.PathLike) -> str:
    """Writes ``image`` ([H, W, 1|3] uint8, or float, see
    :func:`convjax.ops.images.to_uint8`) as an 8-bit RGB PNG; returns the path."""
    path = os.fspath(path)
    with replace_file(path, "wb") as f:
        Image.fromarray(to_uint8(image)).save(f, format="PNG")
    return path


def save_figure(figure: Figure, path: str | os.PathLike, *, dpi: int = 100) -> str:
    """Saves a matplotlib ``figure`` (PNG by the path's extension); returns the path."""
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    with replace_file(path, "wb") as f:
        figure.savefig(f, dpi=dpi, format=extension)
    return path


def panel_figure(
    images: Sequence[np.ndarray], titles: Sequence[str], title: str | None = None
) -> Figure:
    """Images [H_i, W_i, 3] in [0, 1] side by side, each with its title, on a new Figure."""
    if len(images) != len(titles):
        raise ValueError(f"got {len(images)} images but {len(titles)} titles")
    figure = Figure(figsize=(4 * len(images), 4.4))
    axes = figure.subplots(1, len(images), squeeze=False)[0]
    for ax, image, name in zip(axes, images, titles, strict=True):
        ax.imshow(np.clip(image, 0.0, 1.0))
        ax.set_title(name)
        ax.axis("off")
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1, 0.94) if title else None)
    return figure


def cost_curves_figure(steps: Sequence[int], costs: Mapping[str, Sequence[float]]) -> Figure:
    """Each cost term against the iteration, one panel per term (log scale when all
    values are positive), on a new Figure."""
    names = list(costs)
    figure = Figure(figsize=(4 * len(names), 3.4))
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        values = np.asarray(costs[name], np.float64)
        ax.plot(np.asarray(steps), values)
        if np.all(values > 0):
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.3)
    figure.tight_layout()
    return figure


def save_style_panel(
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    result: np.ndarray,
    path: str | os.PathLike,
    title: str | None = None,
) -> str:
    """A content | style(s) | result panel as a PNG. Images: [H, W, 3] in [0, 1]."""
    if len(styles) > 1:
        style_titles = [f"style {i + 1}" for i in range(len(styles))]
    else:
        style_titles = ["style"] * len(styles)
    figure = panel_figure(
        [content, *styles, result], ["content", *style_titles, "result"], title=title
    )
    return save_figure(figure, path)


def save_cost_curves(
    steps: Sequence[int], costs: Mapping[str, Sequence[float]], path: str | os.PathLike
) -> str:
    """:func:`cost_curves_figure` written as a PNG; returns the path."""
    return save_figure(cost_curves_figure(steps, costs), path)
