"""Face verification and one-shot recognition on a workdir: train, evaluate, enroll,
identify, verify (``experiments/faces.py`` and notebooks call these).

- :func:`train_and_evaluate`: the generic training run
  (:func:`convjax.runs.train.train_and_evaluate`; the task's ``train_iterator`` gives
  identity-balanced batches and its ``check_train_metrics`` warns on collapse), then
  :func:`evaluate`.
- :func:`load_embedder`: the trained embedding function of a workdir, rebuilt from its
  ``config.json``; the task says how a model embeds images (``task.embed_fn``).
- :func:`evaluate`: the run's ``verification`` and ``one_shot`` evaluators
  (:mod:`convjax.evals.faces`: the same code and figures as the training run's
  evaluations of that checkpoint) on the held-out identities, the threshold chosen on
  validation pairs, plus the verification heads; writes ``threshold.json``, ``roc.png``
  and ``face_eval.json``.
- :func:`enroll_files`, :func:`identify_files`, :func:`verify_files`: image files,
  preprocessed exactly as the eval split (:func:`convjax.runs.inference.model_inputs`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import convjax.data.identities  # noqa: F401  (registers the `identities` builder)
from convjax.data import samplers
from convjax.evals import EvalState, Evaluator, build_evaluator, build_evaluators
from convjax.evals.faces import OneShotEvaluator, VerificationEvaluator
from convjax.face import evaluation, metrics
from convjax.face.gallery import Gallery, Identification
from convjax.face.thresholds import VerificationThreshold
from convjax.models import get_model
from convjax.ops.distances import squared_distances
from convjax.runs import lock
from convjax.runs import train as train_lib
from convjax.runs import workdir as workdir_lib
from convjax.runs.console import Announce, counted, say
from convjax.runs.files import read_json, replace_file
from convjax.runs.images import read_image, save_figure
from convjax.runs.inference import model_inputs
from convjax.tasks import get_task
from convjax.tasks.embedding import Embedding
from convjax.tasks.verification import Verification
from convjax.train.state import TrainState
from convjax.train.step import make_train_step

FACE_EVALS = ("verification", "one_shot")
THRESHOLD_JSON = "threshold.json"
ROC_PNG = "roc.png"
REPORT_JSON = "face_eval.json"


@dataclasses.dataclass(frozen=True)
class Embedder:
    """A trained embedding: ``embed(images [B, H, W, C]) -> [B, D]`` (jitted, eval
    mode), the ``config`` it was trained with, the checkpoint ``step`` and the
    ``dataset`` config that preprocesses image files as the eval split."""

    embed: Callable[[jax.Array], jax.Array]
    config: ml_collections.ConfigDict
    step: int
    dataset: ml_collections.ConfigDict  # how image files become inputs (no data on disk)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains ``config`` in ``workdir``; returns the final eval metrics of the loop."""
    return train_lib.train_and_evaluate(config, workdir)


def load_embedder(workdir: str, config: ml_collections.ConfigDict | None = None) -> Embedder:
    """The latest checkpoint of ``workdir`` as an :class:`Embedder` (model rebuilt from
    the workdir's ``config.json``; ``config``, when given, must be compatible)."""
    restored = workdir_lib.restore(workdir, config=config)
    _check_embedding_task(restored, workdir)
    embed_fn = restored.task.embed_fn(restored.model)
    variables = restored.variables
    embed = jax.jit(lambda images: embed_fn(variables, images))
    return Embedder(
        embed=embed, config=restored.config, step=restored.step, dataset=restored.inference_dataset
    )


def _check_embedding_task(restored: workdir_lib.Restored, workdir: str) -> None:
    if not isinstance(restored.task, Embedding | Verification):
        raise ValueError(
            f"{workdir} was trained with task {restored.config.task!r}; faces needs task "
            "'embedding' or 'verification'"
        )


def fit_verification_head(
    pairs: np.ndarray,
    same: np.ndarray,
    kind: str = "l1",
    steps: int = 300,
    learning_rate: float = 0.05,
    seed: int = 0,
) -> tuple[nn.Module, dict]:
    """Trains ``verification_head`` on precomputed embedding pairs [N, 2, D] with
    labels ``same`` [N] through the generic train step (full batch, Adam).

    Returns the model and its variables.
    """
    task = get_task("verification")
    model = get_model("verification_head", kind=kind)
    variables = dict(
        task.init_variables(model, jax.random.PRNGKey(seed), jnp.asarray(pairs[:1, 0]))
    )
    state = TrainState.create(
        params=variables.pop("params"),
        model_state=variables,
        tx=optax.adam(learning_rate),
        rng=jax.random.PRNGKey(seed),
    )
    step = jax.jit(make_train_step(task.loss_fn(model)))
    batch = {"image": jnp.asarray(pairs, jnp.float32), "same": jnp.asarray(same, jnp.int32)}
    for _ in range(steps):
        state, _ = step(state, batch)
    return model, {"params": state.params}


def _balanced_pair_embeddings(
    embeddings: np.ndarray, labels: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """All same-identity pairs and as many random different ones: [N, 2, D], same [N]."""
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    rng = np.random.default_rng(seed)
    neg = rng.choice(np.flatnonzero(~same), int(same.sum()), replace=False)
    chosen = np.concatenate([np.flatnonzero(same), neg])
    pairs = np.stack([embeddings[i[chosen]], embeddings[j[chosen]]], 1)
    return pairs, same[chosen].astype(np.int32)


def verification_head_report(
    validation: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    kind: str = "l1",
    seed: int = 0,
    steps: int = 300,
) -> dict:
    """Fits the head on balanced validation pairs, scores balanced test pairs.
    ``validation``, ``test``: (embeddings [N, D], labels [N])."""
    train_pairs, train_same = _balanced_pair_embeddings(*validation, seed)
    test_pairs, test_same = _balanced_pair_embeddings(*test, seed)
    model, variables = fit_verification_head(train_pairs, train_same, kind, steps, seed=seed)
    logits = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(test_pairs)))
    return {
        "kind": kind,
        "accuracy": float(np.mean((logits > 0) == (test_same == 1))),
        "auc": float(metrics.roc_auc(logits, test_same)),
        "pairs": int(len(test_same)),
    }


def embed_split(
    embedder: Embedder, split: str, announce: Announce | None = None, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings [N, D], labels [N]) of a whole split, read through the eval pipeline;
    ``announce`` gets the progress through its batches."""
    data = samplers.load_split(embedder.config.dataset, split)
    images = data["image"]
    say(announce, f"Embedding {split} ({len(images):,} images)")
    starts = counted(
        range(0, len(images), batch_size),
        total=-(-len(images) // batch_size),
        what=f"{split} batches",
        announce=announce,
    )
    chunks = [
        evaluation.embed_in_batches(embedder.embed, images[i : i + batch_size], batch_size)
        for i in starts
    ]
    return np.concatenate(chunks), data["label"]


def save_threshold(threshold: VerificationThreshold, workdir: str) -> str:
    """Writes ``threshold.json`` to ``workdir``; returns its path."""
    path = os.path.join(workdir, THRESHOLD_JSON)
    with replace_file(path) as f:
        json.dump(threshold.to_dict(), f, indent=2)
    return path


def load_threshold(workdir: str) -> VerificationThreshold | None:
    """The threshold :func:`evaluate` saved with the model, if any."""
    path = os.path.join(workdir, THRESHOLD_JSON)
    if not os.path.exists(path):
        return None
    return VerificationThreshold.from_dict(read_json(path))


def evaluate(
    workdir: str,
    *,
    config: ml_collections.ConfigDict | None = None,
    write: bool = True,
    announce: Announce | None = None,
) -> dict:
    """One-shot and verification report by the config's ``verification`` and
    ``one_shot`` evaluators (their figures under ``evals``), and the verification heads
    of ``face_eval``; with ``write``,
    ``threshold.json``, ``roc.png`` and ``face_eval.json`` go to ``workdir``.
    ``announce`` (e.g. ``print``) gets a line per stage and the embedding progress.
    With ``write``, the workdir is held (:func:`convjax.runs.lock.hold`): a run
    training or evaluating there refuses this one."""
    held = write and os.path.isdir(workdir) and jax.process_index() == 0
    with lock.hold(workdir, enabled=held):
        return _evaluate(workdir, config=config, write=write, announce=announce)


def face_evaluators(restored: workdir_lib.Restored) -> list[Evaluator]:
    """The run's ``verification`` and ``one_shot`` evaluators (``config.evals``); a config
    from before evaluators existed gets both from its ``face_eval`` splits and threshold
    settings."""
    context = workdir_lib.eval_context(restored)
    found = build_evaluators(context, only=lambda name, spec: spec.get("type") in FACE_EVALS)
    if found:
        return found
    face_eval = restored.config.get("face_eval") or ml_collections.ConfigDict()
    options = {
        "threshold_split": face_eval.get("validation_split", "validation"),
        "criterion": face_eval.get("criterion", "accuracy"),
        "target_far": face_eval.get("target_far", 1e-3),
    }
    split = face_eval.get("test_split", "test")
    return [
        build_evaluator(kind, {"type": kind, "split": split, "options": options}, context)
        for kind in FACE_EVALS
    ]


def _evaluate(
    workdir: str,
    *,
    config: ml_collections.ConfigDict | None,
    write: bool,
    announce: Announce | None,
) -> dict:
    restored = workdir_lib.restore(workdir, config=config)
    _check_embedding_task(restored, workdir)
    config = restored.config
    say(announce, f"Restored {config.model} at step {restored.step} from {workdir}")
    evaluators = face_evaluators(restored)
    say(announce, f"Evaluating: {', '.join(e.name for e in evaluators)} (embedding the splits)")
    state = EvalState(evaluators[0].context.strategy, host=restored.state)
    results = workdir_lib.evaluate_restored(restored, evaluators, state=state)
    by_type = {type(e): (e, results[e.name]) for e in evaluators}
    verifier, verified = by_type[VerificationEvaluator]
    report = {"one_shot": by_type[OneShotEvaluator][1].details, **verified.details.report}
    face_eval = config.get("face_eval") or ml_collections.ConfigDict()
    steps = face_eval.get("head_steps", 300)
    splits = [verifier.embeddings(state, s) for s in (verifier.threshold_split, verifier.split)]
    report["verification_head"] = {}
    for kind in face_eval.get("head_kinds", ("l1", "chi2")):
        say(announce, f"Fitting the {kind} verification head ({steps} steps)")
        report["verification_head"][kind] = verification_head_report(
            *splits, kind, config.seed, steps=steps
        )
    report["evals"] = {name: result.all_metrics for name, result in results.items()}
    report["step"] = restored.step
    if write:
        _write_report(workdir, report, verified.details, announce)
    return report


def _write_report(
    workdir: str, report: dict, verified: evaluation.EmbeddingEvaluation, announce: Announce | None
) -> None:
    save_threshold(verified.threshold, workdir)
    roc = metrics.roc_figure({"test pairs": (verified.fpr, verified.tpr)})
    save_figure(roc, os.path.join(workdir, ROC_PNG))
    with replace_file(os.path.join(workdir, REPORT_JSON)) as f:
        json.dump(report, f, indent=2)
    say(announce, f"Wrote {THRESHOLD_JSON}, {ROC_PNG} and {REPORT_JSON} to {workdir}")


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, announce: Announce | None = None
) -> dict:
    """:func:`train` then :func:`evaluate`, with wall times, holding the workdir for both."""
    start = time.perf_counter()
    with lock.hold(workdir, enabled=jax.process_index() == 0):
        loop_metrics = train(config, workdir)
        train_s = time.perf_counter() - start
        report = evaluate(workdir, announce=announce)
    report["loop_eval"] = loop_metrics
    report["train_seconds"] = train_s
    report["total_seconds"] = time.perf_counter() - start
    return report


def embed_files(embedder: Embedder, paths: Sequence[str | np.ndarray]) -> np.ndarray:
    """Embeds image files (paths, or ``skimage:<name>``, or images read by
    :func:`~convjax.runs.images.read_image`), preprocessed exactly as the
    eval split at the trained input size (:func:`convjax.runs.inference.model_inputs`):
    -> [N, D]."""
    images = model_inputs(list(paths), embedder.dataset)
    return np.asarray(embedder.embed(jnp.asarray(images)))


def _named_paths(entries: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"enroll takes NAME=IMAGE_PATH entries; got {entry!r}")
        pairs.append((name, path))
    return pairs


def enroll_files(
    workdir: str,
    gallery_path: str,
    named_paths: Sequence[str],
    *,
    config: ml_collections.ConfigDict | None = None,
    embedder: Embedder | None = None,
) -> Gallery:
    """Enrols ``NAME=IMAGE`` entries into the gallery file (created if missing, with
    the threshold saved in ``workdir``); returns the gallery."""
    pairs = _named_paths(named_paths)
    images = [read_image(p) for _, p in pairs]  # a bad file fails before the model loads
    embedder = embedder or load_embedder(workdir, config)
    embeddings = embed_files(embedder, images)
    if os.path.exists(gallery_path):
        gallery = Gallery.load(gallery_path)
    else:
        threshold = load_threshold(workdir)
        gallery = Gallery(
            embeddings.shape[1],
            threshold=None if threshold is None else threshold.threshold,
            metadata={
                "workdir": os.path.abspath(workdir),
                "model": embedder.config.model,
                "step": embedder.step,
            },
        )
    gallery.enroll([n for n, _ in pairs], embeddings)
    gallery.save(gallery_path)
    return gallery


def identify_files(
    workdir: str,
    gallery_path: str,
    paths: Sequence[str],
    k: int = 1,
    *,
    config: ml_collections.ConfigDict | None = None,
    embedder: Embedder | None = None,
) -> Identification:
    """Top-k identities for each image file (``None`` names: not in the gallery)."""
    gallery = Gallery.load(gallery_path)
    images = [read_image(p) for p in paths]  # a bad file fails before the model loads
    embedder = embedder or load_embedder(workdir, config)
    queries = embed_files(embedder, images)
    return gallery.identify(queries, k=min(k, gallery.num_identities))


def verify_files(
    workdir: str,
    first: str,
    second: str,
    *,
    config: ml_collections.ConfigDict | None = None,
    embedder: Embedder | None = None,
) -> tuple[float, bool, float]:
    """(squared distance, same person?, threshold) for two image files, with the
    threshold chosen on validation pairs by :func:`evaluate`."""
    images = [read_image(first), read_image(second)]  # before the model loads
    threshold = load_threshold(workdir)
    if threshold is None:
        raise ValueError(
            f"No {THRESHOLD_JSON} in {workdir!r}: run the 'evaluate' verb first, "
            "which chooses the threshold on validation pairs."
        )
    embedder = embedder or load_embedder(workdir, config)
    e = embed_files(embedder, images)
    distance = float(squared_distances(e[0], e[1]))
    return distance, bool(threshold.accepts(distance)), threshold.threshold
