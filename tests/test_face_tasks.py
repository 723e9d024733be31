"""Embedding models, the verification head, and the embedding/verification tasks
through the generic train step (one device with jit, four with pmap)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from convjax.losses.triplet import mined_triplet_loss
from convjax.models import get_model
from convjax.tasks import get_task
from convjax.train.parallel import get_strategy
from convjax.train.state import TrainState


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def init_state(model, example, task=None, lr=1e-2):
    rng = jax.random.PRNGKey(0)
    if task is not None:
        variables = dict(task.init_variables(model, rng, example))
    else:
        variables = dict(jax.jit(lambda r, x: model.init(r, x, train=False))(rng, example))
    params = variables.pop("params")
    return TrainState.create(params=params, model_state=variables, tx=optax.adam(lr), rng=rng)


SMALL_EMBEDDING = dict(backbone="lenet5", backbone_kwargs={"batch_norm": True}, embed_dim=16)


def test_embedding_net_is_unit_norm_and_siamese_shares_weights():
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 28, 28, 3))
    verifier = get_model("siamese_verifier", **SMALL_EMBEDDING)
    variables = jax.jit(verifier.init)(jax.random.PRNGKey(0), jnp.stack([x[:1], x[:1]], 1))
    e = jax.jit(lambda v, x: verifier.apply(v, x, method="embed"))(variables, x)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    # Both images of a pair go through the one embedding network: the head's logit
    # equals w . |f(a) - f(b)| + b computed from single-image embeddings.
    pairs = jnp.stack([x[:3], x[3:]], axis=1)
    logits = jax.jit(verifier.apply)(variables, pairs)
    head = variables["params"]["head"]["logit"]
    want = np.abs(np.asarray(e[:3]) - np.asarray(e[3:])) @ np.asarray(head["kernel"])[:, 0]
    np.testing.assert_allclose(logits, want + float(head["bias"][0]), rtol=1e-4, atol=1e-5)


def test_tasks_embed_images_with_the_models_embedding_network():
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 28, 28, 3))
    verifier = get_model("siamese_verifier", **SMALL_EMBEDDING)
    variables = get_task("verification").init_variables(verifier, jax.random.PRNGKey(0), x[:1])
    got = get_task("verification").embed_fn(verifier)(variables, x)
    # The same weights in a standalone embedding network give the same embeddings.
    embedder = get_model("embedding", **SMALL_EMBEDDING)
    inner = {
        "params": variables["params"]["embedder"],
        "batch_stats": variables["batch_stats"]["embedder"],
    }
    np.testing.assert_allclose(got, embedder.apply(inner, x, train=False), rtol=1e-5, atol=1e-6)
    assert got.shape == (4, 16)
    own = get_task("embedding").embed_fn(embedder)(inner, x)
    np.testing.assert_allclose(own, got, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="embeds images with model 'siamese_verifier'"):
        get_task("verification").embed_fn(get_model("verification_head", kind="l1"))


@pytest.mark.parametrize("kind", ["l1", "chi2"])
def test_verification_head_matches_numpy(kind):
    rng = np.random.default_rng(0)
    pair = rng.normal(size=(5, 2, 8)).astype(np.float32)
    head = get_model("verification_head", kind=kind)
    variables = head.init(jax.random.PRNGKey(0), pair)
    w = np.asarray(variables["params"]["logit"]["kernel"])[:, 0]
    b = float(variables["params"]["logit"]["bias"][0])
    f_i, f_j = pair[:, 0].astype(np.float64), pair[:, 1].astype(np.float64)
    if kind == "l1":
        features = np.abs(f_i - f_j)
    else:
        features = (f_i - f_j) ** 2 / (np.abs(f_i) + np.abs(f_j) + 1e-6)
    np.testing.assert_allclose(head.apply(variables, pair), features @ w + b, rtol=1e-4, atol=1e-5)


def test_bad_model_input_is_a_clear_value_error():
    with pytest.raises(ValueError, match=r"\[B, 2, D\]"):
        get_model("verification_head").init(jax.random.PRNGKey(0), jnp.zeros((4, 8)))
    with pytest.raises(ValueError, match="l1, chi2"):
        get_model("verification_head", kind="cos").init(jax.random.PRNGKey(0), jnp.zeros((4, 2, 8)))
    with pytest.raises(ValueError, match=r"\[B, 2, H, W, C\]"):
        get_model("siamese_verifier").init(jax.random.PRNGKey(0), jnp.zeros((4, 32, 32, 3)))
    with pytest.raises(ValueError, match="Valid models"):
        get_model("embedding", backbone="lenet6").init(
            jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))
        )
    with pytest.raises(ValueError, match="batch_all, batch_hard, semi_hard, soft_margin"):
        get_task("embedding", mining="hardest")
    with pytest.raises(ValueError, match="triplet, contrastive"):
        get_task("embedding", loss="arcface")


def pk_batch(p=4, k=4, size=28, seed=0):
    """Identity images: a per-identity colour pattern plus noise, P x K identity-major."""
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(-1, 1, size=(p, size, size, 3))
    labels = np.repeat(np.arange(p), k).astype(np.int32)
    images = patterns[labels] + 0.3 * rng.normal(size=(p * k, size, size, 3))
    return {"image": images.astype(np.float32), "label": labels}


@pytest.mark.parametrize("loss,mining", [("triplet", "semi_hard"), ("contrastive", "batch_all")])
def test_embedding_task_loss_and_one_jit_step(loss, mining):
    task = get_task("embedding", loss=loss, mining=mining)
    model = get_model("embedding", **SMALL_EMBEDDING)
    batch = pk_batch()
    state = init_state(model, batch["image"][:1])
    value, (metrics, _) = jax.jit(task.loss_fn(model))(
        state.params, state.model_state, batch, jax.random.PRNGKey(0)
    )
    if loss == "triplet":
        embed = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0])
        e = embed({"params": state.params, **state.model_state}, batch["image"])
        want = jax.jit(mined_triplet_loss, static_argnums=2)(e, batch["label"], mining)
        np.testing.assert_allclose(value, want, rtol=1e-5)
    assert set(metrics) >= {"loss", "mean_pos_dist", "mean_neg_dist", "fraction_active", "spread"}
    strategy = get_strategy("jit")
    step = strategy.compile_train_step(task.loss_fn(model))
    device_state = strategy.put_state(state)
    device_state, out = step(device_state, strategy.put_batch(batch))
    assert int(device_state.step) == 1 and np.isfinite(float(out["loss"]))
    eval_batch = {**batch, "mask": np.r_[np.ones(12), np.zeros(4)].astype(np.float32)}
    sums = strategy.compile_eval_step(task.eval_fn(model))(
        device_state, strategy.put_batch(eval_batch)
    )
    assert float(sums["count"]) == 12 and 0 <= float(sums["recall_at_1"]) <= 12


def test_embedding_task_learns_under_pmap_on_four_devices():
    """P = 4 identities over 4 devices would leave no negatives per shard: with
    P = 8 each device holds 2 whole identities; the loss goes down."""
    task = get_task("embedding", loss="triplet", mining="batch_hard")
    model = get_model("embedding", **SMALL_EMBEDDING)
    batch = pk_batch(p=8, k=2)
    strategy = get_strategy("pmap")
    step = strategy.compile_train_step(task.loss_fn(model.clone(axis_name=strategy.axis_name)))
    state = strategy.put_state(init_state(model, batch["image"][:1], lr=3e-3))
    losses = []
    for _ in range(15):
        state, metrics = step(state, strategy.put_batch(batch))
        losses.append(float(strategy.get_metrics(metrics)["loss"]))
    assert losses[-1] < 0.5 * losses[0]


def test_verification_task_trains_a_head_on_precomputed_embeddings():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def pairs(n, seed):
        r = np.random.default_rng(seed)
        a = r.integers(0, 20, n)
        same = (np.arange(n) % 2 == 0).astype(np.int32)
        b = np.where(same == 1, a, (a + r.integers(1, 20, n)) % 20)
        f = lambda ids: centres[ids] + 0.1 * r.normal(size=(n, 16))  # noqa: E731
        return {"image": np.stack([f(a), f(b)], 1).astype(np.float32), "same": same}

    task = get_task("verification")
    model = get_model("verification_head", kind="chi2")
    train = pairs(256, 1)
    state = init_state(model, train["image"][0, :1], task=task, lr=0.1)
    strategy = get_strategy("jit")
    step = strategy.compile_train_step(task.loss_fn(model))
    state = strategy.put_state(state)
    for _ in range(60):
        state, _ = step(state, strategy.put_batch(train))
    test = {**pairs(200, 2), "mask": np.ones(200, np.float32)}
    sums = strategy.compile_eval_step(task.eval_fn(model))(state, strategy.put_batch(test))
    assert float(sums["accuracy"]) / float(sums["count"]) > 0.95
