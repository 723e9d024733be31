"""Neural style transfer, run through the generic train step and step loop.

The generated images are the optimised pytree (``TrainState.params``); the VGG
feature network is frozen and closed over in the task's loss. Content activations
and style Gram matrices are computed once per scale and travel as the (constant)
batch, so a batch of content images, or of content/style pairs, is split over
devices by the same strategies (``jit``, ``pmap``, ``shard_map``) as training, and
:func:`convjax.train.loop.run_steps` drives the iterations.

A workdir holds ``config.json``, orbax checkpoints of the optimised images (with the
cost history), the result images, the panel, the cost curves and ``costs.json``. A
run resumes from its newest checkpoint; given the workdir alone it continues (or
re-renders) with the saved config.

The config and its checks are :mod:`convjax.runs.style_config`. Entry point:
:func:`stylize` (``experiments/stylize.py`` is a thin wrapper).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from convjax.models.features import MIN_SIZE, FeatureNet, build_feature_net
from convjax.ops.images import fit_image, resize_image
from convjax.runs import images, lock
from convjax.runs.files import replace_file
from convjax.runs.style_config import Plan, choose_strategy, read_plan, resolve_config
from convjax.runs.workdir import CHECKPOINT_DIR, save_config
from convjax.style import color
from convjax.style.inputs import initial_images, scale_sizes
from convjax.tasks.style import COST_NAMES, build_batch
from convjax.train.checkpointing import Checkpointer, CheckpointMismatchError
from convjax.train.loop import Every, Progress, evaluate, run_steps
from convjax.train.optimizers import make_optimizer
from convjax.train.parallel import Strategy
from convjax.train.state import TrainState

COSTS_JSON = "costs.json"
# --------------------------------------------------------------------------- inputs


def _feature_net(plan: Plan) -> FeatureNet:
    network = plan.config["network"]
    return build_feature_net(
        plan.task.layers,
        arch=str(network.arch),
        pool=str(network.pool),
        weights=network.weights or None,
        seed=int(network.seed),
    )


def _scale_inputs(
    plan: Plan, contents_full: np.ndarray, styles_full: Sequence[np.ndarray], size: Sequence[int]
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """The images of one scale: content RGB [N, h, w, 3], the styles' RGB at
    ``style_scale``, and what the network sees of each (luminance with
    ``preserve_color``: each style's matched to its content's mean and std)."""
    contents_rgb = np.stack([resize_image(c, size) for c in contents_full])
    style_side = max(1, round(float(plan.config["style_scale"]) * max(size)))
    styles_rgb = [fit_image(s, style_side) for s in styles_full]
    if not plan.preserve_color:
        return contents_rgb, styles_rgb, contents_rgb, styles_rgb
    content_net = np.asarray(color.luminance(jnp.asarray(contents_rgb)))
    styles_net = [
        np.asarray(
            color.match_luminance(
                color.luminance(jnp.asarray(style)), content_net[i if plan.pair_styles else 0]
            )
        )
        for i, style in enumerate(styles_rgb)
    ]
    return contents_rgb, styles_rgb, content_net, styles_net


def _outputs(opt_images: np.ndarray, content_rgb: np.ndarray, preserve_color: bool) -> np.ndarray:
    """Optimised images [N, H, W, 1|3] -> RGB [N, H, W, 3] (luminance + content colours)."""
    if preserve_color:
        return np.asarray(
            color.recombine_luminance(jnp.asarray(opt_images), jnp.asarray(content_rgb))
        )
    return np.clip(opt_images, 0.0, 1.0)


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


class _Recorder:
    """Takes each iteration's costs: checks them, keeps the history, and every
    ``log_every_steps`` iterations says the training run's progress line
    (:class:`convjax.train.loop.Progress`) through ``say`` (``None``: silent)."""

    def __init__(
        self,
        history: dict[str, list],
        total: int,
        log_every_steps: int,
        say: Callable[[str], None] | None,
    ):
        self.history, self.total, self.log_every_steps = history, total, log_every_steps
        self.say = say
        self.progress = Progress(len(history["step"]), total, eval_every=None)

    def timed(self, train_step: Callable, scale: int) -> Callable:
        """The first scale's step, its compile timed apart (the progress line shows it)."""
        return self.progress.timed_first_call(train_step, "train" if scale == 0 else f"s{scale}")

    def on_step(self, iteration: int, scale: int, costs: Mapping[str, float]) -> None:
        bad = [k for k, v in costs.items() if not math.isfinite(float(v))]
        if bad:
            raise FloatingPointError(
                f"style transfer diverged at iteration {iteration}: {bad} not finite; lower "
                "the learning rate or the style weight"
            )
        self.history["step"].append(iteration)
        self.history["scale"].append(scale)
        for k in COST_NAMES:
            self.history[k].append(costs[k])
        done = iteration + 1
        if self.say is not None and (done % self.log_every_steps == 0 or done == self.total):
            self.progress.update(done)
            self.say(self.progress.line(done, {k: costs[k] for k in COST_NAMES}))


def _empty_history() -> dict[str, list]:
    return {"step": [], "scale": [], **{k: [] for k in COST_NAMES}}


def _history_arrays(history: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    """The history as arrays for a checkpoint (the costs are float32 values: exact)."""
    return {
        k: np.asarray(v, np.int32 if k in ("step", "scale") else np.float32)
        for k, v in history.items()
    }


class _ImageCheckpoints:
    """Orbax checkpoints (:class:`~convjax.train.checkpointing.Checkpointer`, in the
    workdir's checkpoint folder) of the optimised images' TrainState and the cost
    history, numbered by the iterations done over all scales."""

    def __init__(self, workdir: str, keep: int | None):
        self.checkpointer = Checkpointer(os.path.join(workdir, CHECKPOINT_DIR), keep=keep)

    def save(self, done: int, host_state: TrainState, history: Mapping[str, list]) -> None:
        items = {**host_state.checkpoint_items(), "history": _history_arrays(history)}
        self.checkpointer.save(done, items)

    def restore(
        self, target: Callable[[int], TrainState]
    ) -> tuple[int, TrainState, dict[str, list]] | None:
        """The newest readable checkpoint: (iterations done, host state, history).

        :meth:`Checkpointer.restore` sets an unreadable newest step aside (naming it)
        and tries the previous one; that one holds a shorter history, and may be of
        another scale, so its target is built again from its own step number.
        """
        while (done := self.checkpointer.latest_step()) is not None:
            state = target(done)
            history = {k: np.zeros(done) for k in _empty_history()}
            items = {**state.checkpoint_items(), "history": _history_arrays(history)}
            try:
                restored = self.checkpointer.restore(items)
            except CheckpointMismatchError:
                if self.checkpointer.latest_step() == done:
                    raise  # not a fallback: the newest readable step does not fit
                continue
            if restored is None:
                return None
            history = {k: v.tolist() for k, v in restored.pop("history").items()}
            return done, state.replace_from_checkpoint(restored), history
        return None

    def close(self) -> None:
        self.checkpointer.close()


def _fresh_state(plan: Plan, start: np.ndarray) -> TrainState:
    """A host TrainState for images ``start: [N, h, w, C]`` with the task's optimizer."""
    tx = plan.task.make_optimizer(plan.config["optimizer"], plan.num_train_steps, make_optimizer)
    key = jax.random.key_data(jax.random.key(plan.seed))
    state = TrainState.create(params={"image": jnp.asarray(start)}, tx=tx, rng=key)
    # Host copies, so no two leaves share a buffer (L-BFGS keeps the params in its
    # state) when the step donates the state.
    return jax.tree.map(np.array, state)


def _run_scale(
    plan: Plan,
    feature_net: FeatureNet,
    strategy: Strategy,
    batch: dict[str, np.ndarray],
    state: TrainState,
    *,
    train_step: Callable,
    on_step: Callable[[int, dict[str, float]], None],
    every: Sequence[Every],
) -> tuple[TrainState, dict[str, float]]:
    """Runs the host ``state`` from its step to ``plan.num_train_steps`` through the
    compiled generic ``train_step``; returns the host state and the costs at its
    images (the eval step)."""
    placed = run_steps(
        train_step,
        strategy.put_state(state),
        itertools.repeat(strategy.put_batch(batch)),
        get_metrics=strategy.get_metrics,
        start_step=int(state.step),
        num_steps=plan.num_train_steps,
        log_every=1,  # every iteration's costs go into the history
        on_log=on_step,
        every=every,
    )
    eval_step = strategy.compile_eval_step(plan.task.eval_fn(feature_net))
    eval_batch = {**batch, "mask": np.ones(len(batch["index"]), np.float32)}
    costs = evaluate(strategy, eval_step, placed, [eval_batch])
    return strategy.get_state(placed), {k: costs[k] for k in COST_NAMES}


def _callbacks(
    plan: Plan,
    strategy: Strategy,
    workdir: str | None,
    checkpoints: _ImageCheckpoints | None,
    history: Mapping[str, list],
    scale: int,
    contents_rgb: np.ndarray,
) -> list[Every]:
    """Snapshots every ``save_every_steps`` iterations
    (``iterations/scale<s>_<step>_<i>.png``) and checkpoints every
    ``checkpoint_every_steps`` and at the end of the scale."""
    every = []
    if workdir and plan.save_every_steps > 0:

        def snapshot(step: int, state: TrainState) -> None:
            if step % plan.save_every_steps == 0:
                opt = np.asarray(strategy.get_state(state.params)["image"])
                for i, image in enumerate(_outputs(opt, contents_rgb, plan.preserve_color)):
                    name = f"scale{scale}_{step:05d}_{i}.png"
                    images.save_png(image, os.path.join(workdir, "iterations", name))

        every.append(Every(plan.save_every_steps, snapshot))
    if checkpoints is not None:

        def checkpoint(step: int, state: TrainState) -> None:
            done = scale * plan.num_train_steps + step
            checkpoints.save(done, strategy.get_state(state), history)

        every.append(Every(plan.checkpoint_every_steps, checkpoint))
    return every


@dataclasses.dataclass
class _Inputs:
    """The full-size content images [N, H, W, 3], the style images and the scale sizes."""

    contents: np.ndarray
    styles: list[np.ndarray]
    sizes: list[tuple[int, int]]


def _load_inputs(plan: Plan) -> _Inputs:
    first = images.load_image(plan.content_specs[0], int(plan.config["image_size"]))
    size = first.shape[:2]
    contents = np.stack([first] + [images.load_image(s, size) for s in plan.content_specs[1:]])
    styles = [images.read_image(s) for s in plan.style_specs]
    sizes = scale_sizes(size, int(plan.config["num_scales"]), MIN_SIZE)
    return _Inputs(contents, styles, sizes)


def _resume(
    plan: Plan,
    inputs: _Inputs,
    checkpoints: _ImageCheckpoints | None,
    say: Callable[[str], None],
) -> tuple[int, TrainState | None, dict[str, list]]:
    """(first scale to run, its restored host state or None, the history so far)."""
    if checkpoints is None:
        return 0, None, _empty_history()
    n, total = plan.num_train_steps, plan.num_train_steps * len(inputs.sizes)

    def target(done: int) -> TrainState:
        if not 0 < done <= total:
            raise ValueError(f"checkpoint {done} lies outside this run's {total} iterations")
        h, w = inputs.sizes[(done - 1) // n]
        return _fresh_state(plan, np.zeros((len(inputs.contents), h, w, plan.channels)))

    resumed = checkpoints.restore(target)
    if resumed is None:
        return 0, None, _empty_history()
    done, state, history = resumed
    say(f"resuming after iteration {done} of {total} from the workdir's checkpoint")
    return (done - 1) // n, state, history


def _start_state(
    plan: Plan, content_net: np.ndarray, size: Sequence[int], previous: np.ndarray | None
) -> TrainState:
    """A scale's first state: the previous scale's result resized, else the
    configured start images."""
    if previous is not None:
        return _fresh_state(plan, np.stack([resize_image(c, size) for c in previous]))
    ratio = float(plan.config["init_noise_ratio"])
    return _fresh_state(plan, initial_images(content_net, plan.init, ratio, plan.seed))


def _optimise(
    plan: Plan,
    inputs: _Inputs,
    feature_net: FeatureNet,
    strategy: Strategy,
    workdir: str | None,
    checkpoints: _ImageCheckpoints | None,
    recorder: _Recorder,
    first_scale: int,
    state: TrainState | None,
) -> tuple[np.ndarray, dict[str, float], np.ndarray, list[np.ndarray]]:
    """Runs the scales from ``first_scale`` (``state``: its restored state, if any).

    Returns the optimised images [N, H, W, C], their costs, and the last scale's
    content and style RGB images.
    """
    current, final = None, {}
    for scale in range(first_scale, len(inputs.sizes)):
        size = inputs.sizes[scale]
        contents_rgb, styles_rgb, content_net, styles_net = _scale_inputs(
            plan, inputs.contents, inputs.styles, size
        )
        batch = build_batch(
            feature_net, plan.task, content_net, styles_net, plan.weights, plan.pair_styles
        )
        if state is None or current is not None:
            state = _start_state(plan, content_net, size, current)
        offset = scale * plan.num_train_steps

        def on_step(step: int, costs: dict[str, float], scale=scale, offset=offset) -> None:
            recorder.on_step(offset + step - 1, scale, costs)

        every = _callbacks(
            plan, strategy, workdir, checkpoints, recorder.history, scale, contents_rgb
        )
        train_step = strategy.compile_train_step(plan.task.loss_fn(feature_net))
        state, final = _run_scale(
            plan, feature_net, strategy, batch, state,
            train_step=recorder.timed(train_step, scale), on_step=on_step, every=every,
        )  # fmt: skip
        current = np.asarray(state.params["image"])
    return current, final, contents_rgb, styles_rgb


def stylize(
    config: ml_collections.ConfigDict | None,
    workdir: str | None = None,
    *,
    progress: bool = True,
    announce: Callable[[str], None] | None = None,
) -> StylizeResult:
    """Runs style transfer as ``config`` describes (see configs/style_transfer.py).

    ``config=None`` continues the run saved in ``workdir`` (its ``config.json``). With a
    ``workdir`` it writes ``config.json``, orbax checkpoints (``checkpoints/``, every
    ``checkpoint_every_steps`` iterations and at the end of every scale; a rerun
    resumes from the newest readable one), ``result.png`` (``result_<i>.png`` for a
    batch), ``panel.png`` (content | style(s) | result), ``cost_curves.png``,
    ``costs.json`` and, every ``save_every_steps`` iterations,
    ``iterations/scale<s>_<step>_<i>.png``.

    ``announce`` receives one-line messages: which feature network (pretrained or
    random) and which parallel strategy run, where a run resumes, and a note when a
    saved config used older field names. With ``progress``, a progress line (the
    training run's: iteration, costs, rate, ETA) every ``log_every_steps`` iterations
    goes to ``announce`` (``print`` when it is ``None``). The workdir is held
    (:func:`convjax.runs.lock.hold`): a second run there is refused.
    """
    held = bool(workdir) and (config is not None or os.path.isdir(workdir))
    with lock.hold(workdir or ".", enabled=held and jax.process_index() == 0):
        return _stylize(config, workdir, progress=progress, announce=announce)


def _start(
    config: ml_collections.ConfigDict | None, workdir: str | None, say: Callable[[str], None]
) -> tuple[Plan, _Inputs, Strategy, FeatureNet]:
    """Everything checked and loaded before the first compile."""
    config, notes = resolve_config(config, workdir)
    for note in notes:
        say(note)
    plan = read_plan(config)
    inputs = _load_inputs(plan)
    strategy = choose_strategy(str(config.parallel), len(plan.content_specs))
    feature_net = _feature_net(plan)
    say(f"feature network: {feature_net.description}")
    say(
        f"{len(plan.content_specs)} image(s) at "
        f"{' -> '.join(f'{h}x{w}' for h, w in inputs.sizes)}, "
        f"strategy {strategy.name!r} over {strategy.num_devices} device(s)"
    )
    return plan, inputs, strategy, feature_net


def _stylize(
    config: ml_collections.ConfigDict | None,
    workdir: str | None,
    *,
    progress: bool,
    announce: Callable[[str], None] | None,
) -> StylizeResult:
    """The body of :func:`stylize`, with the workdir held."""
    say = announce or (lambda message: None)
    plan, inputs, strategy, feature_net = _start(config, workdir, say)
    checkpoints = None
    if workdir:
        save_config(plan.config, workdir)
        checkpoints = _ImageCheckpoints(workdir, plan.config["keep_checkpoints"])
    try:
        first_scale, state, history = _resume(plan, inputs, checkpoints, say)
        total = plan.num_train_steps * len(inputs.sizes)
        recorder = _Recorder(
            history, total, plan.log_every_steps, (announce or print) if progress else None
        )
        current, final, contents_rgb, styles_rgb = _optimise(
            plan, inputs, feature_net, strategy, workdir, checkpoints, recorder,
            first_scale, state,
        )  # fmt: skip
    finally:
        if checkpoints is not None:
            checkpoints.close()
    results = _outputs(current, contents_rgb, plan.preserve_color)
    files = {}
    if workdir:
        files = _write_outputs(
            workdir, plan, results, contents_rgb, styles_rgb, history, final,
            feature_net.description,
        )  # fmt: skip
    return StylizeResult(results, history, final, feature_net.description, files)


def _write_outputs(
    workdir: str,
    plan: Plan,
    results: np.ndarray,
    contents: np.ndarray,
    styles: Sequence[np.ndarray],
    history: dict[str, list[float]],
    final: dict[str, float],
    description: str,
) -> dict[str, str]:
    """Result PNG(s), panel(s), cost curves and ``costs.json``; returns name -> path."""
    files = {}
    batch = len(results) > 1
    for i, (result, content) in enumerate(zip(results, contents, strict=True)):
        suffix = f"_{i}" if batch else ""
        files[f"result{suffix}"] = images.save_png(
            result, os.path.join(workdir, f"result{suffix}.png")
        )
        panel_styles = [styles[i]] if plan.pair_styles else list(styles)
        files[f"panel{suffix}"] = images.save_style_panel(
            content,
            panel_styles,
            result,
            os.path.join(workdir, f"panel{suffix}.png"),
            title=description.split(":")[0],
        )
    files["cost_curves"] = images.save_cost_curves(
        history["step"],
        {k: history[k] for k in COST_NAMES},
        os.path.join(workdir, "cost_curves.png"),
    )
    summary = {
        "feature_net": description,
        "initial": {k: history[k][0] for k in COST_NAMES},
        "final": final,
        "history": history,
    }
    path = os.path.join(workdir, COSTS_JSON)
    with replace_file(path) as f:
        json.dump(summary, f, indent=1)
    files["costs"] = path
    return files
