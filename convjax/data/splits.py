"""Fixed, seeded, stratified train/test splits for the bundled datasets."""

from __future__ import annotations

import numpy as np


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int = 0
) -> dict[str, np.ndarray]:
    """labels: [N] -> {'train': sorted indices, 'test': sorted indices}.

    Within every class (in sorted class order) the member indices are permuted by
    ``numpy.random.default_rng(seed)`` and the first ``round(test_fraction * size)``
    go to ``test``. numpy's Generator streams are stable, so the split is too.
    """
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        test.append(members[: int(round(test_fraction * len(members)))])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return {"train": train, "test": test}
