"""Image input and output for style transfer: load, resize, save, panels, cost curves.

Images are float32 RGB arrays ``[H, W, 3]`` with values in [0, 1]. An image is named
by a file path or by ``skimage:<name>`` for an image that ships with scikit-image
(``skimage:chelsea``, ``skimage:astronaut``, ``skimage:immunohistochemistry``...), so
everything runs offline.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

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


def _to_rgb_float(image: np.ndarray) -> np.ndarray:
    """Any uint8/bool/float image [H, W] / [H, W, 1|3|4] -> float32 [H, W, 3] in [0, 1]."""
    image = np.asarray(image)
    if image.dtype == np.bool_:
        image = image.astype(np.float32)
    elif np.issubdtype(image.dtype, np.integer):
        image = image.astype(np.float32) / np.iinfo(image.dtype).max
    image = image.astype(np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an image [H, W], [H, W, 1|3|4]; got shape {image.shape}")
    if image.shape[-1] == 4:
        image = image[..., :3]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.clip(image, 0.0, 1.0)


def read_image(spec: str) -> np.ndarray:
    """Reads ``spec`` (a path or ``skimage:<name>``) -> float32 [H, W, 3] in [0, 1]."""
    if spec.startswith("skimage:"):
        name = spec.split(":", 1)[1]
        if name not in BUNDLED_IMAGES:
            raise ValueError(
                f"Unknown bundled image {name!r}; valid: "
                + ", ".join(f"skimage:{n}" for n in BUNDLED_IMAGES)
            )
        import skimage.data

        return _to_rgb_float(getattr(skimage.data, name)())
    if not os.path.exists(spec):
        raise ValueError(
            f"image {spec!r} does not exist; give a file path or one of "
            + ", ".join(f"skimage:{n}" for n in BUNDLED_IMAGES)
        )
    with Image.open(spec) as im:
        return _to_rgb_float(np.asarray(im.convert("RGB")))


def fit_size(shape: Sequence[int], max_side: int) -> tuple[int, int]:
    """(H, W) scaled so the longer side is ``max_side``, keeping the aspect ratio."""
    h, w = int(shape[0]), int(shape[1])
    scale = max_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """image: [H, W, C] float in [0, 1] -> [size[0], size[1], C] (bicubic, antialiased)."""
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image.astype(np.float32)
    from skimage.transform import resize

    resized = resize(image, (h, w, image.shape[-1]), order=3, anti_aliasing=True)
    return np.clip(resized, 0.0, 1.0).astype(np.float32)


def fit_image(image: np.ndarray, max_side: int) -> np.ndarray:
    """image: [H, W, C] -> resized so its longer side is ``max_side`` (aspect kept)."""
    return resize_image(image, fit_size(image.shape, max_side))


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


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[H, W, 3] float in [0, 1] -> uint8 (values outside [0, 1] are clipped)."""
    return np.round(np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def save_png(path: str, image: np.ndarray) -> str:
    """Writes image [H, W, 3] float in [0, 1] as an 8-bit PNG; returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path, format="PNG")
    return path


def save_panel(
    path: str,
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    result: np.ndarray,
    title: str | None = None,
) -> str:
    """A content | style(s) | result panel as a PNG. Images: [H, W, 3] in [0, 1]."""
    images = [content, *styles, result]
    names = ["content"] + [
        f"style {i + 1}" if len(styles) > 1 else "style" for i in range(len(styles))
    ]
    names.append("result")
    fig, axes = plt.subplots(1, len(images), figsize=(4 * len(images), 4.4))
    for ax, image, name in zip(axes, images, names, strict=True):
        ax.imshow(np.clip(image, 0.0, 1.0))
        ax.set_title(name)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.94) if title else None)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_cost_curves(path: str, steps: Sequence[int], costs: Mapping[str, Sequence[float]]) -> str:
    """Each cost term against the iteration, log scale, one panel per term; a PNG."""
    names = list(costs)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        values = np.asarray(costs[name], np.float64)
        ax.plot(np.asarray(steps), values)
        if np.all(values > 0):
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
