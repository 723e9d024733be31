"""``task``: the task's own eval sums over a split (classification: loss, accuracy,
top-k accuracy; detection: the loss terms; embedding: recall@1 and the hinge loss),
summed on the strategy's devices and divided by the number of real examples."""

from __future__ import annotations

import ml_collections

from convjax.data import pipeline
from convjax.evals.base import EvalContext, EvalResult, EvalState, Evaluator, register_evaluator
from convjax.tasks.base import checked_labels
from convjax.train import loop


@register_evaluator("task")
class TaskMetrics(Evaluator):
    """Figures: the task's ``eval_fn`` sums divided by ``count`` (how many examples)."""

    def __init__(self, name: str, context: EvalContext, dataset: ml_collections.ConfigDict):
        super().__init__(name, context, dataset)
        self.context.strategy.check_batch_size(context.eval_batch_size, "eval_batch_size")
        self._step = context.timed_first_call(
            context.strategy.compile_eval_step(context.task.eval_fn(context.model)), "eval"
        )

    def evaluate(self, state: EvalState) -> EvalResult:
        batches = checked_labels(
            pipeline.create_eval_iterator(
                self.dataset, global_batch_size=self.context.eval_batch_size
            ),
            self.context.task,
            self.context.num_classes,
        )
        metrics = loop.evaluate(self.context.strategy, self._step, state.placed, batches)
        return EvalResult(metrics)
