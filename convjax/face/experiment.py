"""Face experiments end to end, as importable functions (scripts and Colab call these).

- :func:`train`: the generic loop (:func:`convjax.train.loop.train_and_evaluate`)
  fed with the task's identity-balanced batches, then the collapse check of the
  logged diagnostics.
- :func:`load_embedder`: the trained embedding function from a workdir.
- :func:`evaluate`: one-shot identification and verification on the held-out
  identities (:mod:`convjax.face.evaluation`), threshold chosen on validation.

This module sits on top of ``convjax.train``; nothing below imports it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import convjax.data.identities  # noqa: F401  (registers the `identities` builder)
from convjax.data import pipeline
from convjax.data import samplers as sampler
from convjax.face import evaluation, metrics
from convjax.face.gallery import Gallery, Identification
from convjax.face.thresholds import VerificationThreshold
from convjax.models import get_model
from convjax.tasks import get_task
from convjax.train import loop
from convjax.train.checkpointing import Checkpointer
from convjax.train.setup import build_model, config_kwargs, init_train_state
from convjax.train.state import TrainState
from convjax.train.step import make_train_step


def _task(config: ml_collections.ConfigDict):
    return get_task(config.task, **config_kwargs(config.get("task_kwargs")))


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains ``config`` in ``workdir`` and returns the loop's final eval metrics.

    The loop draws batches from the task's ``train_iterator`` (P x K identities, or
    pairs) and calls its ``check_train_metrics`` at every log step, so a
    ``CollapseWarning`` fires while training when embeddings collapse.
    """
    return loop.train_and_evaluate(config, workdir)


def load_embedder(
    config: ml_collections.ConfigDict, workdir: str
) -> tuple[Callable[[jax.Array], jax.Array], int]:
    """The embedding function ``images [B, H, W, C] -> [B, D]`` of the latest checkpoint
    in ``workdir`` (jitted, eval mode) and the checkpoint's step."""
    model = build_model(config)
    task = _task(config)
    meta = pipeline.dataset_metadata(config.dataset)
    state = init_train_state(model, task, config, meta.image_shape)
    checkpointer = Checkpointer(os.path.join(workdir, loop.CHECKPOINT_DIR), async_save=False)
    try:
        restored = checkpointer.restore(state.checkpoint_items())
    finally:
        checkpointer.close()
    if restored is None:
        raise ValueError(f"No checkpoint in {workdir!r}; train first.")
    variables = {"params": restored["params"], **restored["model_state"]}
    method = getattr(model, "embed", None)

    @jax.jit
    def embed(images):
        if method is not None:  # a Siamese verifier: its embedding network
            return model.apply(variables, images, train=False, method="embed")
        return model.apply(variables, images, train=False)

    return embed, int(restored["step"])


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


def _balanced_pair_embeddings(embeddings, labels, seed):
    """All same-identity pairs and as many random different ones: [N, 2, D], same [N]."""
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    rng = np.random.default_rng(seed)
    neg = rng.choice(np.flatnonzero(~same), int(same.sum()), replace=False)
    chosen = np.concatenate([np.flatnonzero(same), neg])
    return np.stack([embeddings[i[chosen]], embeddings[j[chosen]]], 1), same[chosen].astype(
        np.int32
    )


def verification_head_report(
    validation, test, kind: str = "l1", seed: int = 0, steps: int = 300
) -> dict:
    """Fits the head on balanced validation pairs, scores balanced test pairs."""
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


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, write: bool = True) -> dict:
    """One-shot and verification report on ``config.face_eval`` splits (validation
    for the threshold, test for everything else); files go to ``workdir``."""
    embed, step = load_embedder(config, workdir)
    face_eval = config.get("face_eval") or ml_collections.ConfigDict()
    splits = {}
    for role in ("validation", "test"):
        split = face_eval.get(f"{role}_split", role)
        data = sampler.load_split(config.dataset, split)
        splits[role] = (evaluation.embed_in_batches(embed, data["image"]), data["label"])
    report = evaluation.evaluate_embeddings(
        splits["validation"],
        splits["test"],
        workdir if write else None,
        criterion=face_eval.get("criterion", "accuracy"),
        target_far=face_eval.get("target_far", 1e-3),
        seed=config.seed,
    )
    steps = face_eval.get("head_steps", 300)
    report["verification_head"] = {
        kind: verification_head_report(
            splits["validation"], splits["test"], kind, config.seed, steps=steps
        )
        for kind in face_eval.get("head_kinds", ("l1", "chi2"))
    }
    report["step"] = step
    if write:
        with open(os.path.join(workdir, evaluation.REPORT_JSON), "w") as f:
            json.dump(report, f, indent=2)
    return report


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """:func:`train` then :func:`evaluate`, with wall times."""
    start = time.perf_counter()
    loop_metrics = train(config, workdir)
    train_s = time.perf_counter() - start
    report = evaluate(config, workdir)
    report["loop_eval"] = loop_metrics
    report["train_seconds"] = train_s
    report["total_seconds"] = time.perf_counter() - start
    return report


def load_threshold(workdir: str) -> VerificationThreshold | None:
    """The threshold saved with the model by :func:`evaluate`, if any."""
    path = os.path.join(workdir, evaluation.THRESHOLD_JSON)
    return VerificationThreshold.load(path) if os.path.exists(path) else None


def embed_files(embed: Callable, config: ml_collections.ConfigDict, paths: list[str]) -> np.ndarray:
    """Embeds image files, preprocessed like the dataset: -> [N, D]."""
    from PIL import Image

    dataset = config.dataset
    height, width, channels = pipeline.dataset_metadata(dataset).image_shape
    images = []
    for path in paths:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            image = image.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(image, np.float32).reshape(height, width, channels) / 255.0
        if dataset.get("mean") is not None:
            array = (array - np.asarray(dataset.mean, np.float32)) / np.asarray(
                dataset.std, np.float32
            )
        images.append(array)
    return np.asarray(embed(jnp.asarray(np.stack(images))))


def enroll_files(
    config: ml_collections.ConfigDict,
    workdir: str,
    gallery_path: str,
    named_paths: list[str],
    embedder: tuple[Callable, int] | None = None,
) -> Gallery:
    """Enrols ``NAME=IMAGE`` entries into the gallery file (created if missing, with
    the threshold saved in ``workdir``); returns the gallery."""
    pairs = []
    for entry in named_paths:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"enroll takes NAME=IMAGE_PATH entries; got {entry!r}")
        pairs.append((name, path))
    embed, step = embedder or load_embedder(config, workdir)
    embeddings = embed_files(embed, config, [p for _, p in pairs])
    if os.path.exists(gallery_path):
        gallery = Gallery.load(gallery_path)
    else:
        threshold = load_threshold(workdir)
        gallery = Gallery(
            embeddings.shape[1],
            threshold=None if threshold is None else threshold.threshold,
            metadata={"workdir": os.path.abspath(workdir), "model": config.model, "step": step},
        )
    gallery.enroll([n for n, _ in pairs], embeddings)
    gallery.save(gallery_path)
    return gallery


def identify_files(
    config: ml_collections.ConfigDict,
    workdir: str,
    gallery_path: str,
    paths: list[str],
    k: int = 1,
    embedder: tuple[Callable, int] | None = None,
) -> Identification:
    """Top-k identities for each image file (``None`` names: not in the gallery)."""
    gallery = Gallery.load(gallery_path)
    embed, _ = embedder or load_embedder(config, workdir)
    return gallery.identify(embed_files(embed, config, paths), k=min(k, gallery.num_identities))


def verify_files(
    config: ml_collections.ConfigDict,
    workdir: str,
    first: str,
    second: str,
    embedder: tuple[Callable, int] | None = None,
) -> tuple[float, bool, float]:
    """(squared distance, same person?, threshold) for two image files, with the
    threshold chosen on validation pairs by :func:`evaluate`."""
    threshold = load_threshold(workdir)
    if threshold is None:
        raise ValueError(
            f"No {evaluation.THRESHOLD_JSON} in {workdir!r}: run the 'evaluate' verb first, "
            "which chooses the threshold on validation pairs."
        )
    embed, _ = embedder or load_embedder(config, workdir)
    e = embed_files(embed, config, [first, second])
    distance = float(np.sum(np.square(e[0] - e[1])))
    return distance, bool(threshold.accepts(distance)), threshold.threshold
