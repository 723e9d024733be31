"""One-shot recognition (1:K): a gallery of enrolled identities and top-k search.

A person is enrolled from one image's embedding or several. Identification
computes the squared distance from every query to every enrolled embedding as one
matrix product, takes each identity's closest enrolled embedding, and returns the
top-k identities (``jax.lax.top_k``); all of it is one jitted function with static
shapes. With a ``threshold`` (chosen on validation pairs, see
:mod:`convjax.face.thresholds`) a query whose best distance is above it is
"not in the database" (open-set rejection).

Galleries are saved as ``.npz`` files that load with ``allow_pickle=False``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

GALLERY_FORMAT = 1
UNKNOWN = None  # the name reported for a rejected (open-set) query


@partial(jax.jit, static_argnames=("k", "query_chunk"))
def search(
    queries: jax.Array,
    enrolled: jax.Array,
    valid: jax.Array,
    k: int = 1,
    query_chunk: int = 128,
) -> tuple[jax.Array, jax.Array]:
    """Top-k identities for each query.

    Args:
      queries: [Q, D] query embeddings.
      enrolled: [I, M, D] up to M enrolled embeddings per identity (padded).
      valid: [I, M] True where ``enrolled`` holds a real embedding.
      k: how many identities to return (static, <= I).
      query_chunk: queries per chunk; bounds the [chunk, I * M] distance matrix.

    Returns:
      ``(distances [Q, k], identities [Q, k])``: increasing squared distances to each
      identity's closest enrolled embedding, and the identity indices.
    """
    num_ids, per_id, dim = enrolled.shape
    flat = enrolled.reshape(num_ids * per_id, dim).astype(jnp.float32)
    flat_sq = jnp.sum(flat * flat, axis=-1)  # once, not per chunk

    def one_chunk(chunk):
        chunk = chunk.astype(jnp.float32)
        # Rank by 2 q.g - |g|^2 (= |q|^2 - distance): one fused pass after the matmul;
        # the distances are recovered for the k winners only.
        scores = 2.0 * jnp.matmul(chunk, flat.T) - flat_sq[None, :]
        if per_id > 1:
            scores = scores.reshape(-1, num_ids, per_id)
            scores = jnp.max(jnp.where(valid[None], scores, -jnp.inf), axis=-1)
        best, ids = jax.lax.top_k(scores, k)
        query_sq = jnp.sum(chunk * chunk, axis=-1, keepdims=True)
        return jnp.maximum(query_sq - best, 0.0), ids

    num_queries = queries.shape[0]
    if num_queries <= query_chunk:
        return one_chunk(queries)
    chunks = math.ceil(num_queries / query_chunk)
    padded = jnp.pad(queries, ((0, chunks * query_chunk - num_queries), (0, 0)))
    d, ids = jax.lax.map(one_chunk, padded.reshape(chunks, query_chunk, dim))
    return d.reshape(-1, k)[:num_queries], ids.reshape(-1, k)[:num_queries]


@dataclasses.dataclass(frozen=True)
class Identification:
    """The answer for Q queries: ``names`` [Q] (best identity, or ``None`` when
    rejected), ``identities`` / ``distances`` [Q, k] (top-k, best first),
    ``known`` [Q] (best distance within the threshold)."""

    names: list[str | None]
    top_names: list[list[str]]
    identities: np.ndarray
    distances: np.ndarray
    known: np.ndarray


def _check_finite(embeddings: np.ndarray, what: str, names: Sequence[str] | None = None) -> None:
    """Refuses NaN/inf rows: embeddings [N, D] (one such row would match, or be nearest to,
    nothing and everything; it poisons every search)."""
    bad = np.flatnonzero(~np.all(np.isfinite(embeddings), axis=-1))
    if bad.size:
        rows = ", ".join(
            f"{i} ({names[i]!r})" if names is not None else str(i) for i in bad[:5]
        ) + (f" and {bad.size - 5} more" if bad.size > 5 else "")
        raise ValueError(
            f"{what} contain NaN or inf values (rows {rows}); "
            "check the model's outputs (a diverged checkpoint?) and the input images."
        )


def _pack(identity: np.ndarray, embeddings: np.ndarray, num_ids: int):
    """Groups rows by identity: identity [N], embeddings [N, D] -> [I, M, D], counts [I]."""
    counts = np.bincount(identity, minlength=num_ids)
    per_id = max(int(counts.max(initial=0)), 1)
    order = np.argsort(identity, kind="stable")
    first = np.cumsum(counts) - counts
    slot = np.arange(identity.size) - first[identity[order]]
    packed = np.zeros((num_ids, per_id, embeddings.shape[1]), np.float32)
    packed[identity[order], slot] = embeddings[order]
    return packed, counts


class Gallery:
    """Enrolled identities: ``names`` [I], embeddings [I, M, D] with ``counts`` [I].

    ``threshold``: squared distance above which a query is rejected as unknown
    (``None``: never reject).
    """

    def __init__(
        self,
        dim: int,
        threshold: float | None = None,
        metadata: dict | None = None,
    ):
        if threshold is not None and math.isnan(threshold):
            raise ValueError("threshold must be a number (a squared distance) or None; got nan")
        self.dim = int(dim)
        self.threshold = threshold
        self.metadata = dict(metadata or {})
        self.names: list[str] = []
        self.embeddings = np.zeros((0, 1, self.dim), np.float32)
        self.counts = np.zeros((0,), np.int64)
        self._device = None

    # ------------------------------------------------------------------ enrolment
    @property
    def num_identities(self) -> int:
        return len(self.names)

    @property
    def num_embeddings(self) -> int:
        return int(self.counts.sum())

    def enroll(self, names: str | Sequence[str], embeddings) -> None:
        """Adds embeddings [N, D] (or one [D]) under ``names`` ([N], or one name for
        all of them). A name already enrolled gets the new images added. Embeddings
        with NaN or inf values are refused (``ValueError``): nothing is enrolled."""
        with np.errstate(over="ignore"):  # values beyond float32 become inf: refused below
            embeddings = np.asarray(embeddings, np.float32)
        if embeddings.ndim == 1:
            embeddings = embeddings[None]
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(
                f"embeddings must be [N, {self.dim}] (or [{self.dim}]); got {embeddings.shape}"
            )
        names = [names] * len(embeddings) if isinstance(names, str) else list(names)
        if len(names) != len(embeddings):
            raise ValueError(f"{len(names)} names for {len(embeddings)} embeddings")
        if not all(isinstance(n, str) and n for n in names):
            raise ValueError("names must be non-empty strings")
        _check_finite(embeddings, "enrolled embeddings", names)
        index = {name: i for i, name in enumerate(self.names)}
        for name in dict.fromkeys(names):
            if name not in index:
                index[name] = len(index)
                self.names.append(name)
        new_ids = np.fromiter((index[n] for n in names), np.int64, len(names))
        old_valid = np.arange(self.embeddings.shape[1])[None, :] < self.counts[:, None]
        old_ids = np.nonzero(old_valid)[0]
        identity = np.concatenate([old_ids, new_ids])
        rows = np.concatenate([self.embeddings[old_valid], embeddings])
        self.embeddings, self.counts = _pack(identity, rows, len(self.names))
        self._device = None

    # -------------------------------------------------------------- identification
    def _device_arrays(self):
        if self._device is None:
            valid = np.arange(self.embeddings.shape[1])[None, :] < self.counts[:, None]
            self._device = (jnp.asarray(self.embeddings), jnp.asarray(valid))
        return self._device

    def search(self, queries, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """queries [Q, D] -> (distances [Q, k], identity indices [Q, k]) as numpy.

        Queries with NaN or inf values are refused (``ValueError``)."""
        with np.errstate(over="ignore"):  # values beyond float32 become inf: refused below
            queries = np.asarray(queries, np.float32)
        if queries.ndim == 1:
            queries = queries[None]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be [Q, {self.dim}]; got {queries.shape}")
        _check_finite(queries, "query embeddings")
        if not 1 <= k <= self.num_identities:
            raise ValueError(
                f"k must be in [1, {self.num_identities}] (the enrolled identities); got {k}"
            )
        enrolled, valid = self._device_arrays()
        d, ids = search(jnp.asarray(queries), enrolled, valid, k=k)
        return np.asarray(d), np.asarray(ids)

    def identify(self, queries, k: int = 1) -> Identification:
        """Top-k identities for queries [Q, D]; best ones beyond the threshold are
        reported as ``None`` ("not in the database")."""
        d, ids = self.search(queries, k)
        known = np.ones(len(d), bool) if self.threshold is None else d[:, 0] <= self.threshold
        top_names = [[self.names[i] for i in row] for row in ids]
        names = [row[0] if ok else UNKNOWN for row, ok in zip(top_names, known, strict=True)]
        return Identification(names, top_names, ids, d, known)

    # ------------------------------------------------------------------ files
    def save(self, path: str) -> None:
        """Writes an ``.npz`` (strings as unicode arrays; no pickled objects)."""
        with open(path, "wb") as f:
            np.savez(
                f,
                format=np.int64(GALLERY_FORMAT),
                names=np.array(self.names, dtype=np.str_).reshape(-1),
                embeddings=self.embeddings,
                counts=self.counts,
                dim=np.int64(self.dim),
                threshold=np.float64(np.nan if self.threshold is None else self.threshold),
                metadata=np.array(json.dumps(self.metadata)),
            )

    @classmethod
    def load(cls, path: str) -> Gallery:
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"]) != GALLERY_FORMAT:
                raise ValueError(f"{path}: gallery format {int(data['format'])} is not supported")
            threshold = float(data["threshold"])
            gallery = cls(
                int(data["dim"]),
                threshold=None if math.isnan(threshold) else threshold,
                metadata=json.loads(str(data["metadata"])),
            )
            gallery.names = [str(n) for n in data["names"]]
            gallery.embeddings = np.asarray(data["embeddings"], np.float32)
            gallery.counts = np.asarray(data["counts"], np.int64)
        valid = np.arange(gallery.embeddings.shape[1])[None, :] < gallery.counts[:, None]
        _check_finite(gallery.embeddings[valid], f"{path}: enrolled embeddings")
        return gallery
