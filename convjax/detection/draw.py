"""Pictures of detections: boxes with labels and scores, sample grids, precision-recall plots.

Arrays in, arrays or :class:`matplotlib.figure.Figure` objects out: nothing here writes a
file or touches pyplot's global state (save with :func:`convjax.runs.images.save_png` and
:func:`convjax.runs.images.save_figure`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from convjax.ops.images import to_uint8

PALETTE = (
    (255, 64, 64),
    (64, 220, 64),
    (64, 128, 255),
    (255, 200, 0),
    (255, 0, 255),
    (0, 220, 220),
    (255, 128, 0),
    (160, 96, 255),
    (255, 255, 255),
    (128, 255, 128),
)


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray | None = None,
    *,
    class_names: Sequence[str] | None = None,
    scale: int = 1,
    width: int = 2,
) -> np.ndarray:
    """Draws xyxy ``boxes [K, 4]`` (pixels of ``image``) with ``class [score]`` labels.

    ``image``: [H, W, C]; ``scale`` enlarges the picture first (nearest) so labels of a
    small image stay legible. Returns uint8 ``[H*scale, W*scale, 3]``.
    """
    picture = Image.fromarray(to_uint8(image))
    if scale != 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    for k, (box, cls) in enumerate(zip(np.asarray(boxes), np.asarray(classes), strict=True)):
        colour = PALETTE[int(cls) % len(PALETTE)]
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        name = class_names[int(cls)] if class_names else str(int(cls))
        label = name if scores is None else f"{name} {float(scores[k]):.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), label, font=font)
        y_text = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1 + 1
        draw.rectangle([x1, y_text, x1 + right - left + 2, y_text + bottom - top + 2], fill=colour)
        draw.text((x1 + 1, y_text), label, fill=(0, 0, 0), font=font)
    return np.asarray(picture)


def image_grid(images: Sequence[np.ndarray], columns: int = 4, pad: int = 4) -> np.ndarray:
    """Tiles equal-sized uint8 images [H, W, 3] into one picture."""
    h, w, c = images[0].shape
    rows = -(-len(images) // columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + col * (w + pad) : pad + col * (w + pad) + w,
        ] = image
    return grid


def precision_recall_figure(
    precision: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    title: str = "Precision-recall at IoU 0.5 (COCO 101-point interpolation)",
) -> Figure:
    """Per-class curves from COCO ``precision [T, R, K, A, M]`` (IoU 0.5, all areas, the
    last maxDets) on a new Figure; classes without ground truth (all -1) are left out."""
    precision = np.asarray(precision)
    if precision.ndim != 5:
        raise ValueError(
            f"precision must be COCO's [T, R, K, A, M]; got shape {tuple(precision.shape)}"
        )
    curves = precision[0, :, :, 0, -1]  # [R, K]
    recall = np.linspace(0.0, 1.0, curves.shape[0])
    figure = Figure(figsize=(5, 4), dpi=120)
    ax = figure.subplots()
    for k in range(curves.shape[1]):
        if np.all(curves[:, k] < 0):
            continue  # no ground truth of this class
        name = class_names[k] if class_names else f"class {k}"
        ax.plot(
            recall,
            curves[:, k],
            label=f"{name} (AP50 {curves[:, k].mean():.3f})",
            color=np.array(PALETTE[k % len(PALETTE)]) / 255,
        )
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    return figure
