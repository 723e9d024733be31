"""Neural style transfer, run through the generic train step.

The generated images are the optimised pytree (``TrainState.params``); the VGG
feature network is frozen and closed over in the task's loss. Content activations
and style Gram matrices are computed once per scale and travel as the (constant)
batch, so a batch of content images, or of content/style pairs, is split over
devices by the same strategies (``jit``, ``pmap``, ``shard_map``) as training.

Entry point: :func:`stylize` (``experiments/stylize.py`` is a thin wrapper).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from convjax.losses.style import gram_matrix
from convjax.style import color, images
from convjax.style.features import MIN_SIZE, FeatureNet, build_feature_net
from convjax.style.task import StyleTransferTask, content_key, gram_key, network_input
from convjax.train.optimizers import make_optimizer
from convjax.train.parallel import JitStrategy, ShardMapStrategy, Strategy, get_strategy
from convjax.train.state import TrainState

INITS = ("content", "noise", "mix")
COST_NAMES = ("content", "style", "tv", "total")


# --------------------------------------------------------------------------- optimiser


def keep_in_range(low: float = 0.0, high: float = 1.0) -> optax.GradientTransformation:
    """Makes the final update land inside [low, high]: ``clip(p + u) - p`` (a projection).

    Chained after any optimizer, it keeps pixels valid at every step.
    """

    def init_fn(params):
        return optax.EmptyState()

    def update_fn(updates, state, params):
        if params is None:
            raise ValueError("keep_in_range needs the params to project the update")
        projected = jax.tree.map(lambda p, u: jnp.clip(p + u, low, high) - p, params, updates)
        return projected, state

    return optax.GradientTransformation(init_fn, update_fn)


def safeguarded_lbfgs(
    learning_rate: float = 1.0, memory_size: int = 10, max_step: float = 0.05
) -> optax.GradientTransformation:
    """``optax.lbfgs`` without a line search, kept to descent steps of bounded size.

    Without a line search a quasi-Newton step can point uphill (negative curvature
    in the memory) or be far too long; here such a step is replaced by steepest
    descent, and every step is scaled so no pixel moves by more than ``max_step``
    (a trust region). The memory is built from the actual parameter differences, so
    it stays consistent with the scaled steps.
    """
    inner = optax.lbfgs(learning_rate, memory_size=memory_size, linesearch=None)

    def update_fn(grads, state, params=None):
        direction, state = inner.update(grads, state, params)
        descent = optax.tree.vdot(direction, grads) < 0

        def largest(tree):
            return jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in jax.tree.leaves(tree)]))

        scale = jnp.minimum(1.0, max_step / jnp.maximum(largest(direction), 1e-30))
        steepest = max_step / jnp.maximum(largest(grads), 1e-30)
        updates = jax.tree.map(
            lambda d, g: jnp.where(descent, scale * d, -steepest * g), direction, grads
        )
        return updates, state

    return optax.GradientTransformation(inner.init, update_fn)


def make_image_optimizer(config: Mapping[str, Any], num_steps: int) -> optax.GradientTransformation:
    """The optimizer of the pixels, followed by :func:`keep_in_range`.

    ``name='lbfgs'`` is ``optax.lbfgs`` without a line search and with a fixed step
    ``learning_rate`` (1.0 is the classic choice), as in PyTorch's and Torch7's L-BFGS
    used by the PyTorch tutorial and jcjohnson/neural-style. A line search needs the
    objective inside ``tx.update`` (``value_fn``), which the generic step does not pass:
    under ``pmap``/``shard_map`` each device would evaluate only its own images and the
    replicated parameters would drift apart. Every other name goes to
    :func:`convjax.train.optimizers.make_optimizer` (Adam, SGD, schedules...).
    """
    if config["name"] == "lbfgs":
        tx = safeguarded_lbfgs(
            float(config["learning_rate"]),
            memory_size=int(config.get("memory_size", 10) or 10),
            max_step=float(config.get("max_step", 0.05) or 0.05),
        )
    else:
        tx = make_optimizer(config, num_steps)
    return optax.chain(tx, keep_in_range(0.0, 1.0))


def choose_strategy(name: str, batch_size: int) -> Strategy:
    """The named strategy; ``'auto'`` takes shard_map over the most devices that divide
    ``batch_size`` (jit for one image), since one image cannot be split."""
    if name != "auto":
        strategy = get_strategy(name)
        strategy.check_batch_size(batch_size)
        return strategy
    n = max(d for d in range(1, jax.device_count() + 1) if batch_size % d == 0)
    return JitStrategy() if n == 1 else ShardMapStrategy(jax.devices()[:n])


# --------------------------------------------------------------------------- inputs


def split_specs(spec: str | Sequence[str]) -> list[str]:
    """``'a.png,skimage:chelsea'`` or a sequence -> a list of image specs."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [s.strip() for s in items if s and s.strip()]
    if not items:
        raise ValueError("no image given; e.g. --config.content=skimage:chelsea")
    return items


def blend_weights(weights: str | Sequence[float] | None, num_styles: int) -> np.ndarray:
    """Normalised blend weights [S] for ``num_styles`` styles (equal when not given)."""
    if weights is None or (isinstance(weights, str) and not weights.strip()):
        values = np.ones(num_styles)
    elif isinstance(weights, str):
        values = np.array([float(w) for w in weights.split(",")])
    else:
        values = np.asarray(weights, np.float64)
    if values.shape != (num_styles,) or np.any(values < 0) or values.sum() <= 0:
        raise ValueError(
            f"style_blend_weights must be {num_styles} non-negative number(s), one per style "
            f"image, not all zero; got {weights!r}"
        )
    return (values / values.sum()).astype(np.float32)


def scale_sizes(shape: Sequence[int], num_scales: int) -> list[tuple[int, int]]:
    """Coarse-to-fine (H, W) sizes, halving from ``shape`` for each extra scale."""
    if num_scales < 1:
        raise ValueError(f"num_scales must be >= 1; got {num_scales}")
    h, w = int(shape[0]), int(shape[1])
    sizes = [
        (max(1, round(h / 2**k)), max(1, round(w / 2**k))) for k in reversed(range(num_scales))
    ]
    if min(sizes[0]) < MIN_SIZE:
        raise ValueError(
            f"the coarsest scale {sizes[0]} is below the feature network's {MIN_SIZE}x{MIN_SIZE}; "
            f"use fewer scales than {num_scales} or a larger image_size than {max(h, w)}"
        )
    return sizes


def initial_images(content: np.ndarray, how: str, noise_ratio: float, seed: int) -> np.ndarray:
    """content: [N, H, W, C] -> the starting images: the content, uniform noise, or a mix
    ``(1 - noise_ratio) * content + noise_ratio * noise``."""
    if how not in INITS:
        raise ValueError(f"Unknown init {how!r}; valid: {', '.join(INITS)}")
    noise = np.random.default_rng(seed).uniform(size=content.shape).astype(np.float32)
    if how == "content":
        return content.astype(np.float32)
    if how == "noise":
        return noise
    return ((1.0 - noise_ratio) * content + noise_ratio * noise).astype(np.float32)


# --------------------------------------------------------------------------- targets


def build_batch(
    feature_net: FeatureNet,
    task: StyleTransferTask,
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    weights: np.ndarray,
    pair_styles: bool,
) -> dict[str, np.ndarray]:
    """The constant batch of targets (see :mod:`convjax.style.task`).

    content: [N, H, W, C] what the network sees of each content image (C = 1 for
    luminance); styles: S images [H_s, W_s, C]; ``pair_styles`` gives content ``i``
    style ``i``, otherwise every content gets the blend of all styles with ``weights``.
    Style Gram matrices are rescaled to the generated image's number of positions
    (``G_S * M_G / M_S``), so a style image of another size (``style_scale``) asks for
    the same statistics per position.
    """
    extract = jax.jit(lambda x: feature_net(network_input(x)))
    content_features = {k: np.asarray(v) for k, v in extract(jnp.asarray(content)).items()}
    n = content.shape[0]
    batch: dict[str, np.ndarray] = {"index": np.arange(n, dtype=np.int32)}
    for layer in task.content_layers:
        batch[content_key(layer)] = content_features[layer]

    def per_position_grams(style: np.ndarray) -> dict[str, np.ndarray]:
        feats = extract(jnp.asarray(style)[None])
        out = {}
        for layer in task.style_layers:
            m_style = feats[layer].shape[1] * feats[layer].shape[2]
            m_generated = content_features[layer].shape[1] * content_features[layer].shape[2]
            out[layer] = np.asarray(gram_matrix(feats[layer])[0]) * (m_generated / m_style)
        return out

    style_grams = [per_position_grams(s) for s in styles]
    for layer in task.style_layers:
        if pair_styles:
            grams = np.stack([g[layer] for g in style_grams])
        else:
            blended = sum(w * g[layer] for w, g in zip(weights, style_grams, strict=True))
            grams = np.broadcast_to(blended, (n, *blended.shape))
        batch[gram_key(layer)] = np.ascontiguousarray(grams, np.float32)
    return batch


# --------------------------------------------------------------------------- the run


@dataclasses.dataclass
class StylizeResult:
    """images: [N, H, W, 3] RGB results in [0, 1]; history: per-iteration costs
    (batch means) with 'step' and 'scale'; final: costs at the results; files: what
    was written to the workdir."""

    images: np.ndarray
    history: dict[str, list[float]]
    final: dict[str, float]
    feature_net: str
    files: dict[str, str]


def _get(config: Mapping[str, Any], key: str, default: Any) -> Any:
    value = config.get(key, default) if hasattr(config, "get") else default
    return default if value is None else value


def _task_from_config(config: Mapping[str, Any]) -> StyleTransferTask:
    defaults = StyleTransferTask()

    def get(key: str) -> Any:
        return _get(config, key, getattr(defaults, key))

    return StyleTransferTask(
        content_layers=dict(get("content_layers")),
        style_layers=dict(get("style_layers")),
        content_weight=float(get("content_weight")),
        style_weight=float(get("style_weight")),
        tv_weight=float(get("tv_weight")),
        normalization=str(get("normalization")),
        tv_kind=str(get("tv_kind")),
    )


def _finite_or_raise(metrics: Mapping[str, float], step: int) -> None:
    bad = [k for k, v in metrics.items() if not math.isfinite(float(v))]
    if bad:
        raise FloatingPointError(
            f"style transfer diverged at iteration {step}: {bad} not finite; lower the "
            "learning rate or the style weight"
        )


def _outputs(opt_images: np.ndarray, content_rgb: np.ndarray, preserve_color: bool) -> np.ndarray:
    """Optimised images [N, H, W, 1|3] -> RGB [N, H, W, 3] (luminance + content colours)."""
    if preserve_color:
        return np.asarray(
            color.recombine_luminance(jnp.asarray(opt_images), jnp.asarray(content_rgb))
        )
    return np.clip(opt_images, 0.0, 1.0)


def _run_scale(
    *,
    task: StyleTransferTask,
    feature_net: FeatureNet,
    strategy: Strategy,
    batch: dict[str, np.ndarray],
    start: np.ndarray,
    tx: optax.GradientTransformation,
    num_steps: int,
    seed: int,
    log_every: int,
    on_log: Callable[[int, dict[str, float]], None],
    on_progress: Callable[[int, dict[str, float]], None] | None,
    on_snapshot: Callable[[int, np.ndarray], None] | None,
    save_every: int,
) -> tuple[np.ndarray, dict[str, float]]:
    """Optimises ``start`` [N, H, W, C] for ``num_steps`` iterations; returns the images
    and the final costs (from the generic eval step)."""
    state = TrainState.create(
        params={"image": jnp.asarray(start)}, tx=tx, rng=jax.random.key_data(jax.random.key(seed))
    )
    # Host copies, so no two leaves share a buffer (L-BFGS keeps the params in its
    # state) when the step donates the state.
    state = strategy.put_state(jax.tree.map(np.array, state))
    device_batch = strategy.put_batch(batch)
    train_step = strategy.compile_train_step(task.loss_fn(feature_net))
    pending: list[tuple[int, Any]] = []

    def flush():
        for step, metrics in pending:
            values = {k: float(v) for k, v in strategy.get_metrics(metrics).items()}
            _finite_or_raise(values, step)
            on_log(step, values)
        if pending and on_progress is not None:
            on_progress(pending[-1][0], values)
        pending.clear()

    for i in range(num_steps):
        state, metrics = train_step(state, device_batch)
        if pending:
            # At most two steps in flight (see convjax.train.loop): a backlog of
            # launches on simulated CPU devices can stall a collective.
            jax.block_until_ready(pending[-1][1])
        pending.append((i, metrics))
        if (i + 1) % log_every == 0 or i + 1 == num_steps:
            flush()
        if on_snapshot is not None and save_every and (i + 1) % save_every == 0:
            on_snapshot(i + 1, strategy.get_state(state.params)["image"])
    result = np.asarray(strategy.get_state(state.params)["image"])

    eval_batch = {**batch, "mask": np.ones(len(batch["index"]), np.float32)}
    sums = strategy.compile_eval_step(task.eval_fn(feature_net))(
        state, strategy.put_batch(eval_batch)
    )
    sums = {k: float(v) for k, v in strategy.get_metrics(sums).items()}
    final = {k: sums[k] / sums["count"] for k in COST_NAMES}
    return result, final


def stylize(
    config: Mapping[str, Any],
    workdir: str | None = None,
    *,
    progress: bool = True,
    announce: Callable[[str], None] | None = None,
) -> StylizeResult:
    """Runs style transfer as ``config`` describes (see configs/style_transfer.py).

    Writes to ``workdir`` (when given): ``result.png`` (``result_<i>.png`` for a batch),
    ``panel.png`` (content | style(s) | result), ``cost_curves.png``, ``costs.json``
    and, every ``save_every`` iterations, ``iterations/<scale>_<step>_<i>.png``.
    ``announce`` receives one-line messages: which feature network (pretrained or
    random) and which parallel strategy run.
    """
    task = _task_from_config(config)
    content_specs = split_specs(_get(config, "content", "skimage:chelsea"))
    style_specs = split_specs(_get(config, "style", "skimage:immunohistochemistry"))
    pair_styles = bool(_get(config, "pair_styles", False))
    if pair_styles and len(style_specs) != len(content_specs):
        raise ValueError(
            f"pair_styles needs one style per content image; got {len(content_specs)} "
            f"content and {len(style_specs)} style image(s)"
        )
    weights = blend_weights(_get(config, "style_blend_weights", None), len(style_specs))
    preserve_color = bool(_get(config, "preserve_color", False))
    if preserve_color and len(content_specs) > 1 and not pair_styles:
        raise ValueError(
            "preserve_color with several content images needs pair_styles=True "
            "(each style's luminance is matched to its own content image)"
        )
    init = str(_get(config, "init", "content"))
    if init not in INITS:
        raise ValueError(f"Unknown init {init!r}; valid: {', '.join(INITS)}")
    num_steps = int(_get(config, "num_steps", 300))
    log_every = max(1, int(_get(config, "log_every", 10)))
    save_every = int(_get(config, "save_every", 0))
    seed = int(_get(config, "seed", 0))
    style_scale = float(_get(config, "style_scale", 1.0))

    first = images.load_image(content_specs[0], int(_get(config, "image_size", 256)))
    full_size = first.shape[:2]
    contents_full = np.stack([first] + [images.load_image(s, full_size) for s in content_specs[1:]])
    styles_full = [images.read_image(s) for s in style_specs]
    sizes = scale_sizes(full_size, int(_get(config, "num_scales", 1)))

    strategy = choose_strategy(str(_get(config, "strategy", "auto")), len(content_specs))
    network = _get(config, "network", {})
    feature_net = build_feature_net(
        task.layers,
        arch=str(_get(network, "arch", "vgg19")),
        pool=str(_get(network, "pool", "avg")),
        weights=_get(network, "weights", None) or None,
        seed=int(_get(network, "seed", 0)),
    )

    if announce is not None:
        announce(f"feature network: {feature_net.description}")
        announce(
            f"{len(content_specs)} image(s) at {' -> '.join(f'{h}x{w}' for h, w in sizes)}, "
            f"strategy {strategy.name!r} over {strategy.num_devices} device(s)"
        )
    history: dict[str, list[float]] = {"step": [], "scale": [], **{k: [] for k in COST_NAMES}}
    files: dict[str, str] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps * len(sizes), desc="stylize", unit="it")

    current = None
    final: dict[str, float] = {}
    for scale, size in enumerate(sizes):
        contents_rgb = np.stack([images.resize_image(c, size) for c in contents_full])
        style_side = max(1, round(style_scale * max(size)))
        styles_rgb = [images.fit_image(s, style_side) for s in styles_full]
        if preserve_color:
            # The network sees luminance; each style's luminance is matched to the
            # mean and std of its content's (content i for pairs, else the one content).
            content_net = np.asarray(color.luminance(jnp.asarray(contents_rgb)))
            styles_net = [
                np.asarray(
                    color.match_luminance(
                        color.luminance(jnp.asarray(style)), content_net[i if pair_styles else 0]
                    )
                )
                for i, style in enumerate(styles_rgb)
            ]
        else:
            content_net, styles_net = contents_rgb, styles_rgb
        batch = build_batch(feature_net, task, content_net, styles_net, weights, pair_styles)
        if current is None:
            start = initial_images(
                content_net, init, float(_get(config, "init_noise_ratio", 0.5)), seed
            )
        else:
            start = np.stack([images.resize_image(c, size) for c in current])
        tx = make_image_optimizer(
            _get(config, "optimizer", {"name": "adam", "learning_rate": 0.02}), num_steps
        )
        offset = scale * num_steps

        def on_log(step, values, scale=scale, offset=offset):
            history["step"].append(offset + step)
            history["scale"].append(scale)
            for k in COST_NAMES:
                history[k].append(values[k])

        def on_progress(step, values, offset=offset):
            if bar is not None:
                bar.n = offset + step + 1
                bar.set_postfix({k: f"{values[k]:.3g}" for k in COST_NAMES}, refresh=False)
                bar.refresh()

        def on_snapshot(step, opt, scale=scale, rgb=contents_rgb):
            out = _outputs(np.asarray(opt), rgb, preserve_color)
            for i, image in enumerate(out):
                path = os.path.join(workdir, "iterations", f"scale{scale}_{step:05d}_{i}.png")
                images.save_png(path, image)

        current, final = _run_scale(
            task=task,
            feature_net=feature_net,
            strategy=strategy,
            batch=batch,
            start=start,
            tx=tx,
            num_steps=num_steps,
            seed=seed,
            log_every=log_every,
            on_log=on_log,
            on_progress=on_progress,
            on_snapshot=on_snapshot if workdir else None,
            save_every=save_every,
        )
    if bar is not None:
        bar.close()

    results = _outputs(current, contents_rgb, preserve_color)
    if workdir:
        files = _write_outputs(
            workdir,
            results,
            contents_rgb,
            styles_rgb,
            history,
            final,
            feature_net.description,
            config,
        )
    return StylizeResult(results, history, final, feature_net.description, files)


def _write_outputs(
    workdir: str,
    results: np.ndarray,
    contents: np.ndarray,
    styles: Sequence[np.ndarray],
    history: dict[str, list[float]],
    final: dict[str, float],
    description: str,
    config: Mapping[str, Any],
) -> dict[str, str]:
    os.makedirs(workdir, exist_ok=True)
    files = {}
    batch = len(results) > 1
    for i, (result, content) in enumerate(zip(results, contents, strict=True)):
        suffix = f"_{i}" if batch else ""
        files[f"result{suffix}"] = images.save_png(
            os.path.join(workdir, f"result{suffix}.png"), result
        )
        panel_styles = [styles[i]] if bool(_get(config, "pair_styles", False)) else list(styles)
        files[f"panel{suffix}"] = images.save_panel(
            os.path.join(workdir, f"panel{suffix}.png"),
            content,
            panel_styles,
            result,
            title=description.split(":")[0],
        )
    files["cost_curves"] = images.plot_cost_curves(
        os.path.join(workdir, "cost_curves.png"),
        history["step"],
        {k: history[k] for k in COST_NAMES},
    )
    summary = {
        "feature_net": description,
        "initial": {k: history[k][0] for k in COST_NAMES},
        "final": final,
        "history": history,
    }
    path = os.path.join(workdir, "costs.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
    files["costs"] = path
    return files
