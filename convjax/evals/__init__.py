"""Evaluators: named measurements of a run's state on a split, chosen in ``config.evals``
and run by the training loop on their cadence and by the scripts that evaluate a finished
workdir. Importing registers the built-in types (``task``, ``detection``,
``verification``, ``one_shot``, ``linear_probe``)."""

from convjax.evals import (
    detection,  # noqa: F401  (registers evaluators)
    faces,  # noqa: F401  (registers evaluators)
    linear_probe,  # noqa: F401  (registers evaluators)
    task_metrics,  # noqa: F401  (registers evaluators)
)
from convjax.evals.base import (
    EvalContext,
    EvalResult,
    EvalState,
    Evaluator,
    build_evaluator,
    build_evaluators,
    eval_specs,
    list_evaluators,
    register_evaluator,
)

__all__ = [
    "EvalContext",
    "EvalResult",
    "EvalState",
    "Evaluator",
    "build_evaluator",
    "build_evaluators",
    "eval_specs",
    "list_evaluators",
    "register_evaluator",
]
