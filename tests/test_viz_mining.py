"""Streaming top-k mining equals sorting every response at once (numpy), with ties and
across batch boundaries, and is the same under jit, pmap and shard_map on 4 devices."""

import functools

import jax
import numpy as np
import pytest

from convjax.viz.mining import (
    TopK,
    compile_mining_step,
    empty_state,
    image_maxima,
    make_mining_step,
    to_numpy,
)

K = 9


def brute_force(acts: np.ndarray, k: int) -> TopK:
    """acts: [N, H, W, U] -> per unit, the k images with the largest maximum (ties: the
    smaller image index), with the first row-major position of that maximum."""
    n, h, w, u = acts.shape
    flat = acts.reshape(n, h * w, u)
    best = flat.max(axis=1)  # [N, U]
    first = flat.argmax(axis=1)  # numpy: the first occurrence
    out = TopK(
        *(
            np.full((u, k), fill, dtype)
            for fill, dtype in (
                (-np.inf, np.float32),
                (-1, np.int32),
                (-1, np.int32),
                (-1, np.int32),
            )
        )
    )
    for unit in range(u):
        order = np.lexsort((np.arange(n), -best[:, unit]))[:k]
        m = len(order)
        out.value[unit, :m] = best[order, unit]
        out.index[unit, :m] = order
        out.y[unit, :m] = first[order, unit] // w
        out.x[unit, :m] = first[order, unit] % w
    return out


def features(params, images):
    """The 'activations' are the images themselves, scaled: full control over ties."""
    return {"a": images * params["scale"], "b": -images[..., :2] * params["scale"]}


def batches(acts: np.ndarray, batch_size: int):
    """Eval-style batches: the last one padded with mask 0 (and junk that must not win)."""
    n = len(acts)
    for start in range(0, n, batch_size):
        image = acts[start : start + batch_size]
        real = len(image)
        pad = batch_size - real
        yield {
            "image": np.concatenate([image, np.full((pad, *acts.shape[1:]), 99.0, np.float32)]),
            "index": np.arange(start, start + batch_size, dtype=np.int32),
            "mask": np.concatenate([np.ones(real), np.zeros(pad)]).astype(np.float32),
        }


def mine(how: str, acts: np.ndarray, batch_size: int, k: int = K):
    step = compile_mining_step(functools.partial(make_mining_step, features), how)
    params = {"scale": np.float32(1.0)}
    shapes = jax.eval_shape(features, params, acts[:1])
    state = empty_state(shapes, k)
    devices = jax.device_count()
    if how == "pmap":
        replicate = lambda tree: jax.tree.map(lambda a: np.stack([a] * devices), tree)  # noqa: E731
        state, params = replicate(state), replicate(params)
    for batch in batches(acts, batch_size):
        if how == "pmap":
            batch = jax.tree.map(lambda a: a.reshape(devices, -1, *a.shape[1:]), batch)
        state = step(state, params, batch)
    return to_numpy(state)


@pytest.fixture(scope="module")
def acts():
    # Small integers: many equal maxima (ties between images, within an image, and
    # across batch and device boundaries); 22 images do not fill the last batch of 8.
    rng = np.random.default_rng(0)
    return rng.integers(0, 4, size=(22, 3, 4, 5)).astype(np.float32)


@pytest.mark.parametrize("how", ["jit", "pmap", "shard_map"])
def test_streaming_topk_equals_brute_force(acts, how):
    assert jax.device_count() == 4
    got = mine(how, acts, batch_size=8)
    expected = {"a": brute_force(acts, K), "b": brute_force(-acts[..., :2], K)}
    for layer in ("a", "b"):
        for field in TopK._fields:
            np.testing.assert_array_equal(
                getattr(got[layer], field), getattr(expected[layer], field), err_msg=(layer, field)
            )
    assert got["a"].value.shape == (5, K)  # the state does not grow with the data


def test_more_slots_than_images_and_batch_size_one(acts):
    got = mine("jit", acts[:5], batch_size=1, k=7)
    expected = brute_force(acts[:5], 7)
    for field in TopK._fields:
        np.testing.assert_array_equal(getattr(got["a"], field), getattr(expected, field))
    assert np.all(got["a"].index[:, 5:] == -1) and np.all(np.isneginf(got["a"].value[:, 5:]))


def test_image_maxima_first_position():
    act = np.zeros((1, 3, 4, 2), np.float32)
    act[0, 1, 3, 0] = act[0, 2, 0, 0] = 5.0  # tie: (1, 3) comes first in row-major order
    act[0, 2, 2, 1] = -1.0
    act[0, :, :, 1] -= 2.0
    value, y, x = (np.asarray(a) for a in image_maxima(act))
    np.testing.assert_array_equal(value, [[5.0, -2.0]])
    np.testing.assert_array_equal(y, [[1, 0]])
    np.testing.assert_array_equal(x, [[3, 0]])
