"""Face evaluators on identities never seen in training (:mod:`convjax.face.evaluation`).

Both embed whole splits through the eval pipeline with the task's ``embed_fn`` (tasks
``embedding`` and ``verification``); evaluators of one round share the embeddings.

- ``verification``: every pair of ``split``, the threshold chosen on the pairs of
  ``threshold_split``: ``auc``, ``eer``, ``tar_at_far_<far>``, accuracy at the threshold,
  LFW-style 10-fold accuracy with its standard error.
- ``one_shot``: one enrolled image per identity of ``split``, every other image a query:
  ``top1``, ``top5``; and open-set identification at the threshold fitted on
  ``threshold_split`` (half the identities enrolled, the other half strangers):
  ``open_set_known_top1``, ``open_set_rejection``.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from convjax.data import samplers
from convjax.evals.base import EvalContext, EvalResult, EvalState, Evaluator, register_evaluator
from convjax.face import evaluation, thresholds
from convjax.tasks.embedding import Embedding
from convjax.tasks.verification import Verification

Split = tuple[np.ndarray, np.ndarray]  # (embeddings [N, D], labels [N])


class _EmbeddingEvaluator(Evaluator):
    """Embeds splits of the evaluator's dataset (shared within a round); fits the
    verification threshold on ``threshold_split``."""

    def __init__(
        self,
        name: str,
        context: EvalContext,
        dataset: ml_collections.ConfigDict,
        threshold_split: str = "validation",
        criterion: str = "accuracy",
        target_far: float = 1e-3,
        seed: int | None = None,
    ):
        super().__init__(name, context, dataset)
        if not isinstance(context.task, Embedding | Verification):
            raise ValueError(
                f"evals.{name}: type {type(self).__name__} needs a task that embeds images "
                f"('embedding' or 'verification'); the run's task is {context.config.task!r}"
            )
        if criterion not in thresholds.CRITERIA:
            raise ValueError(
                f"evals.{name}.options.criterion {criterion!r}; "
                f"valid: {', '.join(thresholds.CRITERIA)}"
            )
        self.threshold_split, self.criterion = threshold_split, criterion
        self.target_far = float(target_far)
        self.seed = int(context.config.get("seed", 0) if seed is None else seed)
        self._embed = jax.jit(context.task.embed_fn(context.model))

    def embeddings(self, state: EvalState, split: str) -> Split:
        """(embeddings [N, D], labels [N]) of ``split`` for ``state`` (made once a round)."""
        key = ("embeddings", self.dataset.name, split)
        if key not in state.memo:
            host = state.host
            variables = jax.device_put({"params": host.params, **host.model_state})
            data = samplers.load_split(self.dataset, split)
            embedded = evaluation.embed_in_batches(
                lambda images: self._embed(variables, images),
                data["image"],
                self.context.eval_batch_size,
            )
            state.memo[key] = (embedded, data["label"])
        return state.memo[key]

    def verification(self, state: EvalState) -> evaluation.EmbeddingEvaluation:
        """The verification evaluation of ``split`` (threshold from ``threshold_split``)."""
        key = ("verification", self.dataset.name, self.split, self.threshold_split,
               self.criterion, self.target_far, self.seed)  # fmt: skip
        if key not in state.memo:
            state.memo[key] = evaluation.verification_evaluation(
                self.embeddings(state, self.threshold_split),
                self.embeddings(state, self.split),
                criterion=self.criterion,
                target_far=self.target_far,
                seed=self.seed,
            )
        return state.memo[key]


VERIFICATION_HEADLINE = ("auc", "eer", "accuracy_at_val_threshold", "ten_fold_accuracy",
                         "ten_fold_standard_error")  # fmt: skip


@register_evaluator("verification")
class VerificationEvaluator(_EmbeddingEvaluator):
    """Pair verification (module docstring). Details: the
    :class:`~convjax.face.evaluation.EmbeddingEvaluation` (threshold, ROC curve)."""

    def evaluate(self, state: EvalState) -> EvalResult:
        result = self.verification(state)
        report = result.report["verification"]
        metrics = {k: float(report[k]) for k in VERIFICATION_HEADLINE}
        for key, value in report.items():
            if key.startswith("tar@far="):
                metrics[f"tar_at_far_{key.removeprefix('tar@far=')}"] = float(value)
        breakdown = {k: float(v) for k, v in report.items() if k not in metrics and "@" not in k}
        return EvalResult(metrics, breakdown, details=result)


@register_evaluator("one_shot")
class OneShotEvaluator(_EmbeddingEvaluator):
    """One-shot and open-set identification (module docstring). Details: the one-shot
    report (``top1``, ``top<k>``, ``queries``, ``identities``)."""

    def evaluate(self, state: EvalState) -> EvalResult:
        embeddings, labels = self.embeddings(state, self.split)
        report = evaluation.one_shot_identification(embeddings, labels, shots=1, seed=self.seed)
        threshold = self.verification(state).threshold.threshold
        open_set = evaluation.open_set_identification(embeddings, labels, threshold, self.seed)
        metrics = {k: float(v) for k, v in report.items() if k.startswith("top")} | open_set
        breakdown = {k: float(report[k]) for k in ("queries", "identities")}
        return EvalResult(metrics, breakdown, details=report)
