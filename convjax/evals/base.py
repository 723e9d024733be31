"""What an evaluator is: a named measurement of a run's state on a split, on a cadence.

A run's ``config.evals`` maps a name to a spec::

    config.evals.eval = {"type": "task"}                       # the task's eval sums
    config.evals.map = {"type": "detection", "every_steps": 500}
    config.evals.one_shot = {"type": "one_shot", "split": "test",
                             "options": {"threshold_split": "validation"}}

- ``type``: a registered evaluator (:func:`list_evaluators`).
- ``split`` (default: ``dataset.eval_split``) and ``dataset`` (fields that replace the
  run's ``dataset`` fields, e.g. another ``name``): the data it reads.
- ``every_steps`` (default: ``config.eval_every_steps``; 0: only at the end): the
  training loop runs it after every ``every_steps``-th step and after the last one.
- ``options``: the evaluator type's own keyword arguments.

Its figures are named ``<name>/<figure>`` in TensorBoard, kept under ``<name>`` in
``metrics.jsonl`` (the ``split`` column) and ``results.json``. Scripts that evaluate a
finished workdir (``experiments/detect.py``, ``experiments/faces.py evaluate``) run the
same evaluators on the restored state, so their figures equal the run's last ones.
A config without ``evals`` (a workdir from before they existed) gets
``{"eval": {"type": "task"}}``, the loop's evaluation of those days.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import ml_collections

from convjax.tasks.base import Task
from convjax.train.parallel import Strategy
from convjax.train.setup import config_kwargs

PyTree = Any
SPEC_FIELDS = ("type", "split", "dataset", "every_steps", "options")
DEFAULT_EVALS = {"eval": {"type": "task"}}


@dataclasses.dataclass(frozen=True)
class EvalContext:
    """What every evaluator of a run shares: the run ``config``, the ``model`` (BatchNorm
    not synchronised: evaluators run it in eval mode), the ``task``, the ``strategy``
    that places the state and batches, and the global ``eval_batch_size``."""

    config: ml_collections.ConfigDict
    model: nn.Module
    task: Task
    strategy: Strategy
    eval_batch_size: int
    # Wraps a compiled function whose first call compiles (the loop times it apart).
    timed_first_call: Callable[[Callable, str], Callable] = lambda fn, what: fn

    @property
    def num_classes(self) -> int | None:
        """The model's class count (``model_kwargs.num_classes``), where it has one."""
        return config_kwargs(self.config.get("model_kwargs")).get("num_classes")


class EvalState:
    """The state one round of evaluations runs on, as each evaluator needs it: ``placed``
    (on the strategy's devices) or ``host`` (numpy), each made once from the other. ``memo``
    lets evaluators of the same round share work (e.g. the embeddings of a split)."""

    def __init__(self, strategy: Strategy, *, placed: PyTree = None, host: PyTree = None):
        if (placed is None) == (host is None):
            raise ValueError("EvalState takes a placed state or a host state")
        self.strategy = strategy
        self._placed, self._host = placed, host
        self.memo: dict[Any, Any] = {}

    @property
    def placed(self) -> PyTree:
        if self._placed is None:
            self._placed = self.strategy.put_state(self._host)
        return self._placed

    @property
    def host(self) -> PyTree:
        if self._host is None:
            self._host = self.strategy.get_state(self._placed)
        return self._host


@dataclasses.dataclass
class EvalResult:
    """``metrics``: the headline figures, logged as curves (``count``, how many examples,
    is logged but not drawn); ``breakdown``: finer figures (per class, per object size)
    kept in ``results.json`` and the evaluate scripts' reports only; ``details``: what a
    script draws or saves besides (arrays, thresholds), or None."""

    metrics: dict[str, float]
    breakdown: dict[str, float] = dataclasses.field(default_factory=dict)
    details: Any = None

    @property
    def all_metrics(self) -> dict[str, float]:
        return {**self.metrics, **self.breakdown}


class Evaluator(abc.ABC):
    """One named evaluator of a run. Subclasses implement :meth:`evaluate`; their
    ``__init__`` takes ``(name, context, dataset, **options)`` and checks the options
    before anything compiles."""

    def __init__(self, name: str, context: EvalContext, dataset: ml_collections.ConfigDict):
        self.name, self.context, self.dataset = name, context, dataset
        self.every_steps = 0

    @property
    def split(self) -> str:
        return self.dataset.eval_split

    def due(self, step: int, num_steps: int) -> bool:
        """After every ``every_steps``-th step and after the last one."""
        return step == num_steps or (self.every_steps > 0 and step % self.every_steps == 0)

    @abc.abstractmethod
    def evaluate(self, state: EvalState) -> EvalResult:
        """The figures of ``state`` on this evaluator's data."""


_EVALUATORS: dict[str, type[Evaluator]] = {}


def register_evaluator(name: str) -> Callable[[type[Evaluator]], type[Evaluator]]:
    def wrap(cls: type[Evaluator]) -> type[Evaluator]:
        if name in _EVALUATORS:
            raise ValueError(f"evaluator {name!r} is registered twice")
        _EVALUATORS[name] = cls
        return cls

    return wrap


def list_evaluators() -> list[str]:
    return sorted(_EVALUATORS)


def eval_specs(config: ml_collections.ConfigDict) -> dict[str, dict[str, Any]]:
    """``config.evals`` as plain dicts (``{"eval": {"type": "task"}}`` when absent)."""
    evals = config.get("evals")
    if evals is None:
        return {k: dict(v) for k, v in DEFAULT_EVALS.items()}
    return {name: config_kwargs(spec) for name, spec in config_kwargs(evals).items()}


def _spec_dataset(config: ml_collections.ConfigDict, name: str, spec: Mapping[str, Any]):
    dataset = ml_collections.ConfigDict(config.dataset.to_dict())
    for key, value in config_kwargs(spec.get("dataset")).items():
        if key not in dataset:
            raise ValueError(
                f"evals.{name}.dataset.{key} is not a dataset field; valid: {', '.join(dataset)}"
            )
        dataset[key] = value
    if spec.get("split"):
        dataset.eval_split = spec["split"]
    return dataset


def _check_options(name: str, cls: type[Evaluator], options: Mapping[str, Any]) -> None:
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p not in ("self", "name", "context", "dataset")]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"evals.{name}.options {unknown} unknown to type {cls.__name__}; "
            f"valid: {', '.join(valid) or 'none'}"
        )


def build_evaluator(name: str, spec: Mapping[str, Any], context: EvalContext) -> Evaluator:
    """The evaluator ``name`` of a run from its spec (module docstring); an unknown type,
    field or option is refused in one line naming the valid ones."""
    unknown = sorted(set(spec) - set(SPEC_FIELDS))
    if unknown:
        valid = ", ".join(SPEC_FIELDS)
        raise ValueError(f"evals.{name} has unknown fields {unknown}; valid: {valid}")
    kind = spec.get("type")
    if kind not in _EVALUATORS:
        raise ValueError(
            f"evals.{name}.type {kind!r} is not an evaluator; valid: {', '.join(list_evaluators())}"
        )
    cls = _EVALUATORS[kind]
    options = config_kwargs(spec.get("options"))
    _check_options(name, cls, options)
    evaluator = cls(name, context, _spec_dataset(context.config, name, spec), **options)
    every = spec.get("every_steps")
    default = context.config.get("eval_every_steps") or 0
    evaluator.every_steps = int(default if every is None else every)
    return evaluator


def build_evaluators(
    context: EvalContext, only: Callable[[str, Mapping[str, Any]], bool] | None = None
) -> list[Evaluator]:
    """The evaluators of ``context.config`` (those ``only(name, spec)`` accepts), in
    name order."""
    return [
        build_evaluator(name, spec, context)
        for name, spec in eval_specs(context.config).items()
        if only is None or only(name, spec)
    ]
