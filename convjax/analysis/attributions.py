"""Feature maps and attributions of a batch, as arrays and as one figure."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from convjax.analysis.mining import display_image
from convjax.analysis.network import Network
from convjax.analysis.plan import Plan
from convjax.models.taps import apply_with_taps, extract_features, train_kwargs
from convjax.viz import attribution, grids


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
        pictures[layer] = grids.feature_map_grid(
            act, scale=grids.display_scale(min(act.shape[:2]), 48)
        )
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


def attribution_figure(network: Network, plan: Plan, images: np.ndarray, cam_layer: str) -> Figure:
    """One row per image: the image and each attribution of its predicted class. The
    occlusion maps (the class probability with the grey square at each position) have
    a colour scale each."""
    maps, predicted = attribution_maps(network, plan, images, cam_layer)
    n = len(images)
    figure = Figure(figsize=(2.2 * len(ATTRIBUTIONS) + 0.6, 2.4 * n))
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
            _draw_attribution(figure, ax, name, maps[name][row], rgb)
            if row == 0:
                label = f"Grad-CAM ({cam_layer})" if name == "Grad-CAM" else name
                ax.set_title(OCCLUSION_TITLE if name == "occlusion" else label, fontsize=9)
    figure.tight_layout()
    return figure


OCCLUSION_TITLE = "occlusion: p(class)"


def _draw_attribution(figure: Figure, ax, name: str, value: np.ndarray, rgb: np.ndarray) -> None:
    """One attribution map on ``ax``: signed reconstructions [H, W, C] as images,
    Grad-CAM over the image, occlusion with its colour scale, the rest as heat maps."""
    if value.ndim == 3:  # signed reconstructions: shown as images
        shown_value = _shown(value)
        ax.imshow(shown_value[..., 0] if value.shape[-1] == 1 else shown_value, cmap="gray")
    elif name == "Grad-CAM":
        ax.imshow(rgb)
        ax.imshow(value, cmap="jet", alpha=0.5)
    elif name == "occlusion":
        picture = ax.imshow(value, cmap="viridis")
        bar = figure.colorbar(picture, ax=ax, fraction=0.046, pad=0.03)
        bar.ax.tick_params(labelsize=7)
    else:
        ax.imshow(value, cmap="hot")
