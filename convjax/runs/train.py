"""``train_and_evaluate(config, workdir)``: the one training run for every task.

It builds the model from the registry, the task from ``config.task``, the batches
from the task's ``train_iterator`` and :mod:`convjax.data.pipeline`, the device
placement from a :class:`~convjax.train.parallel.Strategy`, and drives the steps with
:func:`convjax.train.loop.run_steps`. It owns the workdir: ``config.json``,
checkpoints (resumed automatically), metrics, curves and ``results.json``.

Config fields it reads (see ``configs/lenet5_digits.py`` for a complete example):
``model``, ``model_kwargs``, ``dataset``, ``task``, ``task_kwargs``, ``optimizer``,
``batch_size`` (global), ``eval_batch_size``, ``num_train_steps``,
``log_every_steps``, ``eval_every_steps``, ``checkpoint_every_steps``,
``keep_checkpoints``, ``seed``, ``parallel``, ``dtype``, ``conv_impl``, and ``evals``
(the named evaluators run on their cadence, :mod:`convjax.evals`).
"""

from __future__ import annotations

import dataclasses
import json
import logging as logging_lib
import math
import numbers
import os
import signal
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import ml_collections
from absl import logging

from convjax.data import pipeline
from convjax.evals import EvalContext, EvalResult, EvalState, Evaluator, build_evaluators
from convjax.models.checks import check_image_batch
from convjax.runs import files, lock
from convjax.runs import workdir as workdir_lib
from convjax.runs.metrics import MetricLogger
from convjax.tasks import Task, get_task
from convjax.tasks.base import checked_labels
from convjax.train import loop
from convjax.train.checkpointing import Checkpointer, check_keep
from convjax.train.guard import DEFAULT_MAX_LOSS_FACTOR, DivergenceGuard, check_state_finite
from convjax.train.parallel import Strategy, get_strategy, prefetch_to_device
from convjax.train.preemption import StopSignals, TrainingInterrupted
from convjax.train.setup import (
    abstract_train_state,
    build_model,
    config_kwargs,
    create_train_state,
)
from convjax.train.state import TrainState

PyTree = Any


@dataclasses.dataclass(frozen=True)
class _Setup:
    """Everything the config decides, built (and checked) before anything compiles."""

    strategy: Strategy
    task: Task
    model: nn.Module
    image_shape: tuple[int, int, int]
    eval_batch_size: int
    num_steps: int
    num_classes: int | None  # the model's outputs, where the config says (model_kwargs)
    abstract_state: TrainState  # jax.eval_shape of the initial state: shapes, no arrays

    def eval_context(self, config: ml_collections.ConfigDict, **kwargs: Any) -> EvalContext:
        """What the run's evaluators share (``kwargs``: e.g. ``timed_first_call``)."""
        return EvalContext(
            config, build_model(config), self.task, self.strategy, self.eval_batch_size, **kwargs
        )


def _check_num_steps(config: ml_collections.ConfigDict) -> int:
    steps = config.get("num_train_steps")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(
            f"num_train_steps must be a positive integer (the step to train up to); got {steps!r}"
        )
    return int(steps)


def _setup(config: ml_collections.ConfigDict) -> _Setup:
    num_steps = _check_num_steps(config)
    check_keep(config.get("keep_checkpoints", 3))  # before the workdir is made or locked
    strategy = get_strategy(
        config.get("parallel", "auto"),
        mesh=config.get("mesh"),
        rules=config.get("partitioning", "replicate"),
    )
    strategy.check_batch_size(config.batch_size)
    eval_batch_size = config.get("eval_batch_size") or config.batch_size
    strategy.check_batch_size(eval_batch_size, "eval_batch_size")
    task = get_task(config.task, **config_kwargs(config.get("task_kwargs")))
    model = build_model(config, strategy.axis_name)
    metadata = pipeline.dataset_metadata(config.dataset)
    num_classes = check_num_classes(config, metadata.num_classes)
    abstract = abstract_train_state(model, task, config, metadata.image_shape)
    strategy.check_state(abstract)
    setup = _Setup(
        strategy,
        task,
        model,
        metadata.image_shape,
        eval_batch_size,
        num_steps,
        num_classes,
        abstract,
    )
    build_evaluators(setup.eval_context(config))  # their specs and options are checked here
    return setup


def check_num_classes(config: ml_collections.ConfigDict, dataset_classes: int | None) -> int | None:
    """The model's class count (``model_kwargs.num_classes``; None where it has none),
    checked against the dataset's: fewer outputs than classes is refused in one line
    (labels at or above it would train as all-zero targets); more is allowed with a note."""
    model_classes = (config.get("model_kwargs") or {}).get("num_classes")
    if model_classes is None or dataset_classes is None:
        return model_classes
    if model_classes < dataset_classes:
        raise ValueError(
            f"model_kwargs.num_classes is {model_classes} but dataset {config.dataset.name!r} "
            f"has {dataset_classes} classes; set "
            f"--config.model_kwargs.num_classes={dataset_classes}"
        )
    if model_classes > dataset_classes:
        _say(
            f"note: the model has {model_classes} outputs for the {dataset_classes} classes of "
            f"{config.dataset.name!r}; outputs {dataset_classes}..{model_classes - 1} "
            "are never a target"
        )
    return model_classes


def _say(message: str) -> None:
    logging.info(message)
    if jax.process_index() == 0:
        print(message, flush=True)


def _initial_state(
    setup: _Setup,
    config: ml_collections.ConfigDict,
    workdir: str,
    checkpointer: Checkpointer,
    allow_changes: bool,
) -> TrainState:
    """The newest readable checkpoint's state (restored into a ``jax.eval_shape``
    target laid out by the strategy), or a freshly initialised one, placed for the
    step. A workdir trained with another model, dataset or optimizer is refused unless
    ``allow_changes``."""
    strategy = setup.strategy
    if checkpointer.latest_step() is not None:
        abstract = setup.abstract_state
        workdir_lib.check_compatible(
            workdir, config, abstract, setup.image_shape, allow_changes=allow_changes
        )
        state = workdir_lib.restore_state(checkpointer, strategy.restore_target(abstract))
        if state is not None:
            _say(f"Resumed from {checkpointer.directory} at step {int(state.step)}")
            return strategy.put_state(state)
    return strategy.init_state(
        lambda: create_train_state(setup.model, setup.task, config, setup.image_shape)
    )


def _train_batches(
    setup: _Setup, config: ml_collections.ConfigDict, start_step: int
) -> Iterator[PyTree]:
    """The task's host batches from ``start_step`` on, checked, then placed on devices."""
    host_batches = checked_labels(
        setup.task.train_iterator(
            config.dataset,
            global_batch_size=config.batch_size,
            seed=config.seed,
            start_step=start_step,
        ),
        setup.task,
        setup.num_classes,
    )
    first = next(host_batches)
    check_image_batch(
        first["image"],
        expected=(config.batch_size // jax.process_count(), *setup.image_shape),
        what=f"dataset {config.dataset.name!r} batches",
    )
    return prefetch_to_device(_chain_first(first, host_batches), setup.strategy.put_batch)


def _chain_first(first, rest):
    yield first
    yield from rest


class _Callbacks:
    """What happens at log, eval and checkpoint time: checks, metric files, console."""

    def __init__(
        self,
        setup: _Setup,
        config: ml_collections.ConfigDict,
        checkpointer: Checkpointer,
        logger: MetricLogger,
        start_step: int,
        guard: DivergenceGuard,
        workdir: str,
        record_config_at: int | None = None,
    ):
        self.setup, self.config = setup, config
        self.checkpointer, self.logger = checkpointer, logger
        self.guard, self.workdir = guard, workdir
        # A resume with a changed config: config.json is replaced (the old one kept as
        # config.<record_config_at>.json) once this run saves its first checkpoint.
        self.record_config_at = record_config_at
        self.progress = loop.Progress(start_step, setup.num_steps, eval_every=0)
        self.evaluators = build_evaluators(
            setup.eval_context(config, timed_first_call=self.progress.timed_first_call)
        )
        self.progress.expect_evals([e.every_steps for e in self.evaluators])
        self.last_checkpoint = checkpointer.latest_step()
        self.results: dict[str, EvalResult] = {}  # each evaluator's latest
        # workdir_info.json at this run's first save: a run from scratch, a changed config,
        # or a workdir from before the file existed.
        self.write_info = (
            start_step == 0
            or record_config_at is not None
            or not os.path.isfile(os.path.join(workdir, workdir_lib.WORKDIR_INFO_JSON))
        )

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.guard.check(self.last_checkpoint)  # every step's loss since the last check
        if jax.process_index() == 0:
            self.setup.task.check_train_metrics(step, scalars)  # task-specific warnings
        steps_per_sec = self.progress.update(step)
        self.logger.write(step, "train", scalars | {"steps_per_sec": steps_per_sec})
        shown = {k: scalars[k] for k in ("loss", "accuracy") if k in scalars}
        _say(self.progress.line(step, shown))

    def run_evals(self, state: PyTree, evaluators: list[Evaluator]) -> dict[str, EvalResult]:
        """``evaluators`` on the placed ``state`` (one round: they share their work)."""
        round_state = EvalState(self.setup.strategy, placed=state)
        for evaluator in evaluators:
            self.results[evaluator.name] = evaluator.evaluate(round_state)
        return {e.name: self.results[e.name] for e in evaluators}

    def evaluate(self, step: int, state: PyTree) -> None:
        """Runs the evaluators due at ``step``; logs and prints their figures."""
        due = [e for e in self.evaluators if e.due(step, self.setup.num_steps)]
        if not due:
            return
        self.guard.check(self.last_checkpoint)
        with self.progress.evaluating(step):
            results = self.run_evals(state, due)
        for name, result in results.items():
            # ``count`` is how many examples were evaluated, not a metric to plot.
            metrics = {k: v for k, v in result.metrics.items() if k != "count"}
            self.logger.write(step, name, metrics)
            _say(eval_line(name, step, result.metrics))

    def checkpoint(self, step: int, state: PyTree) -> None:
        """Saves ``step`` once every loss up to it was checked and the state is finite."""
        self.guard.check(self.last_checkpoint)
        items = self.setup.strategy.checkpoint_items(state)
        check_state_finite(items, step)
        self.checkpointer.save(step, items, force=True)
        self.last_checkpoint = step
        if self.write_info and jax.process_index() == 0:  # next to config.json
            workdir_lib.write_workdir_info(
                self.workdir, self.config, self.setup.image_shape, items["params"]
            )
        self.write_info = False
        if self.record_config_at is not None and jax.process_index() == 0:
            kept = workdir_lib.record_config(self.config, self.workdir, step=self.record_config_at)
            kept = f"; the previous one is kept as {os.path.basename(kept)}" if kept else ""
            _say(f"config.json is now this run's config{kept}")
        self.record_config_at = None


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    resume_with_changed_config: bool | None = None,
) -> dict[str, float]:
    """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and
    returns the final eval metrics. Writes checkpoints, ``metrics.jsonl``/``.csv``,
    TensorBoard summaries, ``training_curves.png``, ``config.json`` and ``results.json``.

    - One run per workdir: a second one is refused (:class:`~convjax.runs.lock.WorkdirBusyError`
      naming the running one); a killed run leaves nothing stuck.
    - SIGTERM or SIGINT (Ctrl-C) stop at the next step boundary, save that step and raise
      :class:`~convjax.train.preemption.TrainingInterrupted` (``exit_code`` 143 or 130).
    - Every step's loss is checked before anything is saved
      (:class:`~convjax.train.guard.DivergenceGuard`: NaN/inf, or above
      ``max_loss_factor`` x the early median loss (default 1e6) or ``max_loss``).
    - Resuming with another model, dataset or optimizer than the workdir's
      ``config.json`` is refused unless ``resume_with_changed_config`` (default: the
      config's field of that name); ``config.json`` is then replaced at the first new
      checkpoint, the previous one kept as ``config.<step>.json``.
    """
    workdir = os.path.abspath(workdir)
    setup = _setup(config)  # Everything that can be wrong with the config fails here.
    if resume_with_changed_config is None:
        resume_with_changed_config = bool(config.get(workdir_lib.RESUME_OPT_IN, False))
    checkpoints = os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)
    with lock.hold(workdir, enabled=jax.process_index() == 0), StopSignals() as signals:
        with _WriteFailuresReportedOnce():
            try:
                return _train(setup, config, workdir, signals, resume_with_changed_config)
            except Exception as error:
                if isinstance(error, files.WriteError) or not files.is_user_write_error(error):
                    raise
                raise files.checkpoint_write_error(error, checkpoints) from None


class _WriteFailuresReportedOnce(logging_lib.Filter):
    """Drops the log records (from orbax's save threads, tracebacks and all) of a
    write that failed for want of space or permission: the run's own one-line error
    reports it once."""

    def filter(self, record: logging_lib.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (
            files.is_user_write_error(error or Exception(record.getMessage()))
            or "Commit operations or the Commit callback" in record.getMessage()
        )

    def __enter__(self) -> None:
        logging.get_absl_logger().addFilter(self)

    def __exit__(self, *exc_info) -> None:
        logging.get_absl_logger().removeFilter(self)


def _train(
    setup: _Setup,
    config: ml_collections.ConfigDict,
    workdir: str,
    signals: StopSignals,
    allow_changes: bool,
) -> dict[str, float]:
    is_chief = jax.process_index() == 0
    checkpointer = Checkpointer(
        os.path.join(workdir, workdir_lib.CHECKPOINT_DIR), keep=config.get("keep_checkpoints", 3)
    )
    try:
        state = _initial_state(setup, config, workdir, checkpointer, allow_changes)
    except BaseException:
        checkpointer.close()
        raise
    start_step = int(setup.strategy.get_metrics(state.step))  # one host copy of the step
    record_config_at = _config_record(config, workdir, start_step) if is_chief else None
    if start_step >= setup.num_steps:
        _say(
            f"workdir is at step {start_step} \u2265 num_train_steps {setup.num_steps}: "
            "evaluating only"
        )
    logger = MetricLogger(workdir, resume_step=start_step, enabled=is_chief)
    guard = DivergenceGuard(
        setup.strategy.get_metrics,
        start_step=start_step,
        max_loss_factor=config.get("max_loss_factor", DEFAULT_MAX_LOSS_FACTOR),
        max_loss=config.get("max_loss"),
    )
    callbacks = _Callbacks(
        setup, config, checkpointer, logger, start_step, guard, workdir, record_config_at
    )
    try:
        _run_steps(setup, config, workdir, signals, callbacks, state, start_step)
    except BaseException:
        _close_after_failure(checkpointer, logger)
        raise
    checkpointer.close()
    logger.close()
    if is_chief:
        write_results(workdir, max(start_step, setup.num_steps), callbacks.results)
    return flat_metrics(callbacks.results)


def _run_steps(
    setup: _Setup,
    config: ml_collections.ConfigDict,
    workdir: str,
    signals: StopSignals,
    callbacks: _Callbacks,
    state: TrainState,
    start_step: int,
) -> None:
    """The steps after ``start_step`` (the placed ``state``'s) with their logs,
    evaluations and checkpoints; a run stopped by a signal saves the step it is at and
    raises; a finished run only evaluates."""
    guard = callbacks.guard
    if signals.requested:  # before the first step: nothing new to save
        raise _interruption(signals.signum, start_step, workdir, saved=False)
    train_step = setup.strategy.compile_train_step(
        setup.task.loss_fn(setup.model),
        # With dataset.augment_in_pipeline=False: augment + normalise on device.
        pipeline.device_augment(config.dataset, seed=config.seed),
    )
    state = loop.run_steps(
        guard.wrap(callbacks.progress.timed_first_call(train_step)),  # its first call compiles
        state,
        _train_batches(setup, config, start_step),
        get_metrics=setup.strategy.get_metrics,
        start_step=start_step,
        num_steps=setup.num_steps,
        log_every=int(config.get("log_every_steps") or 100),
        on_log=callbacks.log,
        every=(
            loop.Every(1, callbacks.evaluate),  # each evaluator on its own cadence
            loop.Every(config.get("checkpoint_every_steps") or 0, callbacks.checkpoint),
        ),
        stop=signals.should_stop,
    )
    if guard.step < setup.num_steps and start_step < setup.num_steps:  # stopped early
        callbacks.checkpoint(guard.step, state)  # the step it is at, checked
        callbacks.checkpointer.wait()  # on disk before the process goes
        raise _interruption(signals.agreed_signum, guard.step, workdir, saved=True)
    if start_step >= setup.num_steps:  # A finished run: evaluate only.
        callbacks.run_evals(state, callbacks.evaluators)


def eval_line(name: str, step: int, metrics: dict[str, float]) -> str:
    """``eval at step 400 on 359 examples: loss=0.2521 accuracy=0.9833``."""
    count = f" on {int(metrics['count']):,} examples" if "count" in metrics else ""
    line = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "count")
    return f"{name} at step {step}{count}: {line}"


def flat_metrics(results: dict[str, EvalResult]) -> dict[str, float]:
    """Every evaluator's headline figures in one dict: ``<evaluator>/<figure>``, except
    those of the evaluator named ``eval``, which keep their plain names."""
    flat: dict[str, float] = {}
    for name, result in results.items():
        prefix = "" if name == "eval" else f"{name}/"
        flat |= {f"{prefix}{k}": v for k, v in result.metrics.items()}
    return flat


def _close_after_failure(*closables: Checkpointer | MetricLogger) -> None:
    """Closes each of ``closables`` while an error is on its way out: a failure here
    (e.g. the curves PNG on a full disk) is logged, never raised over the first error."""
    for closable in closables:
        try:
            closable.close()
        except Exception as error:  # noqa: BLE001 -- the first error is the one to report
            logging.debug("closing %s after a failure: %s", type(closable).__name__, error)


def _config_record(config: ml_collections.ConfigDict, workdir: str, start_step: int) -> int | None:
    """Writes ``config.json`` for a run that starts from scratch (or whose config.json
    was lost: the resume was allowed only with the opt-in). For a resume whose config
    differs (only where allowed: the check ran before), says how, and returns the step
    whose ``config.<step>.json`` will keep the old one (None: nothing to record)."""
    if start_step == 0 or not os.path.isfile(os.path.join(workdir, workdir_lib.CONFIG_JSON)):
        workdir_lib.save_config(config, workdir)  # a resume past a lost config.json too
        return None
    changes = workdir_lib.check_resume(workdir, config, allow_changes=True)
    if not changes:
        workdir_lib.save_config(config, workdir)  # the same config, written whole again
        return None
    _say(
        f"Resuming step {start_step} with a changed config (saved -> given): "
        f"{'; '.join(changes[:8])}{' ...' if len(changes) > 8 else ''}"
    )
    return start_step


def _interruption(signum: int | None, step: int, workdir: str, *, saved: bool) -> Exception:
    """The one-line :class:`TrainingInterrupted` of a run stopped by ``signum`` at ``step``."""
    name = signal.Signals(signum).name if signum else "a signal"
    what = f"saved checkpoint {step} in {workdir}" if saved else "nothing new to save"
    return TrainingInterrupted(
        f"Interrupted ({name}) at step {step}: {what}; run the same command to resume.",
        signum=signum or 15,
        step=step,
        saved=saved,
    )


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None (JSON has no such numbers)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(
    workdir: str, step: int, results: dict[str, EvalResult | dict[str, float]]
) -> str:
    """``results.json``: the step the workdir is at and, under each evaluator's name, its
    final figures (breakdown included; strict JSON: a NaN or infinite figure is null)."""
    record: dict[str, Any] = {"step": step}
    for name, result in results.items():
        record[name] = result.all_metrics if isinstance(result, EvalResult) else dict(result)
    path = os.path.join(workdir, workdir_lib.RESULTS_JSON)
    with files.replace_file(path) as f:
        json.dump(json_safe(record), f, indent=2, allow_nan=False)
    return path
