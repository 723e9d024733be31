"""Identity-balanced batches: P identities x K images (triplet mining) and pairs.

Online triplet mining needs several images of each identity in a batch; a plain
shuffle of a face dataset rarely gives that. :class:`PKSampler` draws P identities
and K images of each, identity-major (the K images of an identity are adjacent), so
that splitting a batch into equal contiguous shards (hosts, devices) keeps whole
identities together whenever P is a multiple of the shard count. :class:`PairSampler`
draws same / different pairs for verification.

Both are pure functions of ``(seed, step)``: a resumed run continues the exact
sequence. :func:`create_pk_train_iterator` and :func:`create_pair_train_iterator`
have the signature of :func:`convjax.data.pipeline.create_train_iterator` and read
the split once through the data pipeline (same decoding, example function, resizing
and normalisation), keeping it in host memory.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import ml_collections
import numpy as np

from convjax.data import pipeline
from convjax.data.config import resolve_dataset_config


class PKSampler:
    """Batches of ``P`` identities x ``K`` images drawn from ``labels`` [N].

    Identities with fewer than ``min_images`` images are never drawn (a positive
    needs a second image); identities with fewer than K images repeat images.
    """

    def __init__(
        self,
        labels: np.ndarray,
        identities_per_batch: int,
        images_per_identity: int,
        seed: int,
        min_images: int = 2,
    ):
        labels = np.asarray(labels).reshape(-1)
        ids, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        usable = counts >= min_images
        if identities_per_batch < 1 or images_per_identity < 1:
            raise ValueError(
                f"P and K must be >= 1; got P={identities_per_batch}, K={images_per_identity}"
            )
        if usable.sum() < identities_per_batch:
            raise ValueError(
                f"P={identities_per_batch} identities per batch, but only {int(usable.sum())} "
                f"identities have >= {min_images} images"
            )
        self.p, self.k, self.seed = identities_per_batch, images_per_identity, seed
        order = np.argsort(inverse, kind="stable")
        first = np.cumsum(counts) - counts
        # members[i, j]: the j-th example of identity i (padded with -1).
        self._members = np.full((len(ids), counts.max()), -1, np.int64)
        self._members[inverse[order], np.arange(len(labels)) - first[inverse[order]]] = order
        self._counts = counts
        self._usable = np.flatnonzero(usable)

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def batch_indices(self, step: int) -> np.ndarray:
        """Example indices [P * K] of batch ``step``, identity-major."""
        rng = np.random.default_rng([self.seed % 2**32, step])
        chosen = rng.choice(self._usable, self.p, replace=False)  # [P]
        counts = self._counts[chosen]
        width = self._members.shape[1]
        # K distinct members by sorting random keys (padding sorts last)...
        keys = rng.random((self.p, width))
        keys[np.arange(width)[None, :] >= counts[:, None]] = np.inf
        slots = np.argsort(keys, axis=1)[:, : self.k]
        if slots.shape[1] < self.k:
            slots = np.pad(slots, ((0, 0), (0, self.k - slots.shape[1])))
        # ... and draws with replacement where an identity has fewer than K.
        short = np.arange(self.k)[None, :] >= counts[:, None]
        slots = np.where(short, rng.integers(0, counts[:, None], (self.p, self.k)), slots)
        return self._members[chosen[:, None], slots].reshape(-1)


class PairSampler:
    """Same / different pairs from ``labels`` [N]: even rows same, odd rows different."""

    def __init__(self, labels: np.ndarray, seed: int):
        self._pk = PKSampler(labels, 2, 2, seed)
        self.seed = seed

    def pair_indices(self, step: int, num_pairs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(first [B], second [B], same [B] int32) for batch ``step``."""
        rng = np.random.default_rng([self.seed % 2**32, step, 1])
        pk = self._pk
        same = (np.arange(num_pairs) % 2 == 0).astype(np.int32)
        a_id = rng.choice(pk._usable, num_pairs)
        b_id = rng.choice(pk._usable, num_pairs)
        clash = b_id == a_id
        # Different pairs: redraw a clashing second identity among the others.
        shift = rng.integers(1, len(pk._usable), num_pairs)
        position = np.searchsorted(pk._usable, a_id)
        b_id = np.where(clash, pk._usable[(position + shift) % len(pk._usable)], b_id)
        b_id = np.where(same == 1, a_id, b_id)
        a_slot = rng.integers(0, pk._counts[a_id])
        # Same pairs: a different image of the same identity.
        offset = rng.integers(1, np.maximum(pk._counts[a_id], 2))
        b_slot = np.where(
            same == 1, (a_slot + offset) % pk._counts[a_id], rng.integers(0, pk._counts[b_id])
        )
        return pk._members[a_id, a_slot], pk._members[b_id, b_slot], same


def identity_bucket(labels: np.ndarray, buckets: int) -> np.ndarray:
    """A fixed pseudo-random bucket in [0, buckets) for every identity label [N]."""
    mixed = (np.asarray(labels, np.uint64) * np.uint64(2654435761)) % np.uint64(2**32)
    return (mixed % np.uint64(buckets)).astype(np.int64)


def load_split(
    dataset: ml_collections.ConfigDict | dict, split: str, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """A whole split through the data pipeline: ``{'image': float32 [N, H, W, C],
    'label': int32 [N]}`` (preprocessed exactly as training batches are).

    For datasets without identity-disjoint splits (tfds ``lfw`` has one split), set
    ``dataset.identity_split = {'source': 'train', 'buckets': 100, 'train': (0, 80),
    'validation': (80, 85), 'test': (85, 100)}``: a split named there is the
    ``source`` split restricted to the identities whose :func:`identity_bucket` falls
    in its range, so the named splits hold disjoint identities.
    """
    config = resolve_dataset_config(dataset)
    spec = config.get("identity_split")
    bucket_range = None
    if spec is not None and split in spec:
        bucket_range = tuple(spec[split])
        split = spec["source"]
    config.eval_split = split
    images, labels = [], []
    for batch in pipeline.create_eval_iterator(
        config, global_batch_size=batch_size, process_index=0, process_count=1
    ):
        real = batch["mask"] > 0
        images.append(batch["image"][real])
        labels.append(batch["label"][real])
    data = {"image": np.concatenate(images), "label": np.concatenate(labels)}
    if bucket_range is not None:
        bucket = identity_bucket(data["label"], spec["buckets"])
        keep = (bucket >= bucket_range[0]) & (bucket < bucket_range[1])
        data = {k: v[keep] for k, v in data.items()}
    return data


def _host_slice(global_batch_size: int, process_index, process_count) -> slice:
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if global_batch_size % count:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be a multiple of the number of "
            f"hosts ({count})"
        )
    per_host = global_batch_size // count
    return slice(index * per_host, (index + 1) * per_host)


def create_pk_train_iterator(
    dataset: ml_collections.ConfigDict | dict,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    images_per_identity: int = 4,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite P x K batches of the train split, this host's share of each.

    ``global_batch_size = P * K`` with ``K = images_per_identity``. Yields
    ``{'image': float32 [b, H, W, C], 'label': int32 [b]}``; batch ``k`` depends only
    on ``(seed, k)``, so ``start_step`` resumes the uninterrupted sequence.
    """
    if global_batch_size % images_per_identity:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be P x K, a multiple of "
            f"images_per_identity={images_per_identity}"
        )
    host = _host_slice(global_batch_size, process_index, process_count)
    config = resolve_dataset_config(dataset)
    data = load_split(config, config.train_split)
    sampler = PKSampler(
        data["label"], global_batch_size // images_per_identity, images_per_identity, seed
    )
    step = start_step
    while True:
        index = sampler.batch_indices(step)[host]
        yield {"image": data["image"][index], "label": data["label"][index]}
        step += 1


def create_pair_train_iterator(
    dataset: ml_collections.ConfigDict | dict,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite batches of verification pairs: ``{'image': float32 [b, 2, H, W, C],
    'same': int32 [b]}``, half of them same-identity pairs."""
    host = _host_slice(global_batch_size, process_index, process_count)
    config = resolve_dataset_config(dataset)
    data = load_split(config, config.train_split)
    sampler = PairSampler(data["label"], seed)
    step = start_step
    while True:
        first, second, same = (a[host] for a in sampler.pair_indices(step, global_batch_size))
        images = np.stack([data["image"][first], data["image"][second]], axis=1)
        yield {"image": images, "same": same}
        step += 1
