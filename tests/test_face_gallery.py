"""Gallery enrolment, top-k identification and open-set rejection against numpy."""

import numpy as np
import pytest

from convjax.face import gallery as gallery_lib
from convjax.face.gallery import Gallery


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def brute_force_top_k(queries, names, embeddings, k):
    """Per query: every identity's closest enrolled embedding, sorted (loops)."""
    best = {}
    for q_i, q in enumerate(queries):
        per_name = {}
        for name, e in zip(names, embeddings, strict=True):
            d = float(np.sum((q.astype(np.float64) - e) ** 2))
            per_name[name] = min(d, per_name.get(name, np.inf))
        best[q_i] = sorted(per_name.items(), key=lambda item: item[1])[:k]
    return best


def test_identify_matches_brute_force_with_several_images_per_identity():
    rng = np.random.default_rng(0)
    counts = [1, 3, 2, 1, 4, 2]
    names = [f"id{i}" for i, c in enumerate(counts) for _ in range(c)]
    embeddings = unit(rng.normal(size=(len(names), 16)))
    queries = unit(rng.normal(size=(11, 16)))
    g = Gallery(16)
    g.enroll(names, embeddings)
    assert g.num_identities == 6 and g.num_embeddings == sum(counts)
    want = brute_force_top_k(queries, names, embeddings, k=3)
    # query_chunk=4 exercises the chunked path (11 queries -> 3 chunks, padded).
    d, ids = gallery_lib.search(queries, g.embeddings, g._device_arrays()[1], k=3, query_chunk=4)
    result = g.identify(queries, k=3)
    for q_i in range(len(queries)):
        assert [n for n, _ in want[q_i]] == result.top_names[q_i]
        np.testing.assert_allclose(result.distances[q_i], [v for _, v in want[q_i]], atol=1e-5)
        np.testing.assert_array_equal(np.asarray(ids[q_i]), result.identities[q_i])
        np.testing.assert_allclose(np.asarray(d[q_i]), result.distances[q_i], atol=1e-6)


def test_incremental_enrolment_equals_enrolling_at_once():
    rng = np.random.default_rng(1)
    e = unit(rng.normal(size=(6, 8)))
    at_once = Gallery(8)
    at_once.enroll(["a", "b", "a", "c", "b", "a"], e)
    step_by_step = Gallery(8)
    step_by_step.enroll("a", e[0])
    step_by_step.enroll(["b"], e[1:2])
    step_by_step.enroll(["a", "c"], e[2:4])
    step_by_step.enroll(["b", "a"], e[4:6])
    assert at_once.names == step_by_step.names == ["a", "b", "c"]
    np.testing.assert_array_equal(at_once.counts, [3, 2, 1])
    np.testing.assert_array_equal(at_once.embeddings, step_by_step.embeddings)


def test_one_shot_identification_and_open_set_rejection():
    rng = np.random.default_rng(2)
    people = unit(rng.normal(size=(50, 32)))
    g = Gallery(32)
    g.enroll([f"p{i}" for i in range(50)], people)  # one image each
    known = unit(people + 0.05 * rng.normal(size=people.shape))
    strangers = unit(rng.normal(size=(20, 32)))
    g.threshold = 0.5
    result = g.identify(np.concatenate([known, strangers]))
    assert result.names[:50] == [f"p{i}" for i in range(50)]
    assert result.names[50:] == [None] * 20  # random unit vectors are ~2 apart
    np.testing.assert_array_equal(result.known, np.r_[np.ones(50), np.zeros(20)].astype(bool))


def test_save_and_load_without_pickle(tmp_path):
    rng = np.random.default_rng(3)
    g = Gallery(8, threshold=0.7, metadata={"model": "embedding", "step": 12})
    g.enroll(["ann", "bob", "ann", "zoë"], unit(rng.normal(size=(4, 8))))
    path = str(tmp_path / "gallery.npz")
    g.save(path)
    with np.load(path, allow_pickle=False) as data:  # raises if anything needs pickle
        assert data["names"].dtype.kind == "U"
    loaded = Gallery.load(path)
    assert loaded.names == ["ann", "bob", "zoë"]
    assert loaded.threshold == 0.7 and loaded.metadata == {"model": "embedding", "step": 12}
    queries = unit(rng.normal(size=(5, 8)))
    a, b = g.identify(queries, k=2), loaded.identify(queries, k=2)
    assert a.top_names == b.top_names
    np.testing.assert_array_equal(a.distances, b.distances)
    no_threshold = Gallery(8)
    no_threshold.enroll("x", queries[0])
    no_threshold.save(path)
    assert Gallery.load(path).threshold is None


def test_bad_input_is_a_clear_value_error():
    g = Gallery(8)
    g.enroll(["a", "b"], np.eye(8, dtype=np.float32)[:2])
    with pytest.raises(ValueError, match=r"\[N, 8\]"):
        g.enroll("c", np.zeros((2, 4)))
    with pytest.raises(ValueError, match="2 names for 3 embeddings"):
        g.enroll(["c", "d"], np.zeros((3, 8)))
    with pytest.raises(ValueError, match=r"\[Q, 8\]"):
        g.identify(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"k must be in \[1, 2\]"):
        g.identify(np.zeros((2, 8)), k=3)


def test_non_finite_embeddings_are_refused_at_enrolment_query_and_load(tmp_path):
    """One NaN enrolled row would be every query's match (or make every query unknown)."""
    rng = np.random.default_rng(4)
    people = unit(rng.normal(size=(4, 8)))
    g = Gallery(8, threshold=0.5)
    g.enroll(["a", "b", "c", "d"], people)
    poisoned = people.copy()
    poisoned[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"enrolled embeddings contain NaN or inf .*1 \('f'\)"):
        g.enroll(["e", "f"], poisoned[:2])
    with pytest.raises(ValueError, match=r"rows 0 \('x'\)"):
        g.enroll("x", np.full(8, np.inf, np.float32))
    with pytest.raises(ValueError, match=r"contain NaN or inf"):  # overflows float32
        g.enroll("y", np.full(8, 1e39))
    assert g.names == ["a", "b", "c", "d"] and g.num_embeddings == 4  # nothing enrolled
    with pytest.raises(ValueError, match=r"query embeddings contain NaN or inf .*rows 2\b"):
        g.identify(np.concatenate([people[:2], poisoned[1:2]]))
    assert g.identify(people).names == ["a", "b", "c", "d"]  # the gallery still answers

    path = str(tmp_path / "gallery.npz")
    g.embeddings[2, 0, 0] = np.nan  # a file written by an older version, or edited
    g.save(path)
    with pytest.raises(ValueError, match=r"gallery.npz: enrolled embeddings contain NaN"):
        Gallery.load(path)
    with pytest.raises(ValueError, match="threshold must be a number"):
        Gallery(8, threshold=float("nan"))
