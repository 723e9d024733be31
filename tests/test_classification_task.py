"""The classification task's losses against cross-entropy written in numpy."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from convjax.models import get_model
from convjax.tasks import get_task


def numpy_cross_entropy(logits, labels, smoothing=0.0):
    logits = np.asarray(logits, np.float64)
    log_p = logits - logits.max(-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
    k = logits.shape[-1]
    target = np.full(logits.shape, smoothing / k)
    target[np.arange(len(labels)), labels] += 1.0 - smoothing
    return -(target * log_p).sum(-1)


def test_label_smoothing_and_eval_sums():
    model = get_model("lenet5")
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 32, 32, 1))
    labels = np.array([0, 1, 2, 3, 4, 5])
    variables = model.init(jax.random.PRNGKey(1), x)
    logits = model.apply(variables, x)
    task = get_task("classification", label_smoothing=0.1)
    loss, (metrics, _) = task.loss_fn(model)(
        variables["params"], {}, {"image": x, "label": labels}, jax.random.PRNGKey(2)
    )
    np.testing.assert_allclose(loss, numpy_cross_entropy(logits, labels, 0.1).mean(), rtol=1e-5)
    mask = np.array([1, 1, 1, 1, 0, 0], np.float32)
    sums = task.eval_fn(model)(variables["params"], {}, {"image": x, "label": labels, "mask": mask})
    np.testing.assert_allclose(
        sums["loss"], numpy_cross_entropy(logits, labels, 0.1)[:4].sum(), rtol=1e-5
    )
    assert float(sums["count"]) == 4
    assert float(sums["accuracy"]) == float((np.argmax(logits, -1) == labels)[:4].sum())


class TinyNetWithAux(nn.Module):
    """A conv trunk, an auxiliary classifier ``aux1`` on it, and a main head."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        nn.Dense(5, name="aux1")(x.mean(axis=(1, 2)))  # output used only for the loss
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(5, name="head")(x.reshape(x.shape[0], -1))


def test_auxiliary_classifiers_are_weighted_into_the_loss():
    model = TinyNetWithAux()
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 2))
    labels = np.array([1, 3, 4])
    variables = model.init(jax.random.PRNGKey(1), x)
    params = variables.pop("params")
    # Independent path: flax's own capture of the aux head's output.
    logits, state = model.apply(
        {"params": params, **variables}, x, train=True, capture_intermediates=True,
        mutable=["intermediates", "batch_stats"],
    )
    aux = state["intermediates"]["aux1"]["__call__"][0]
    expected = numpy_cross_entropy(logits, labels).mean() + 0.3 * numpy_cross_entropy(
        aux, labels
    ).mean()
    task = get_task("classification", aux_outputs=("aux1",))
    loss, (metrics, new_state) = task.loss_fn(model)(
        params, variables, {"image": x, "label": labels}, jax.random.PRNGKey(3)
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["aux_loss"], numpy_cross_entropy(aux, labels).mean(),
                               rtol=1e-5)
    assert set(new_state) == {"batch_stats"}
    assert not np.allclose(new_state["batch_stats"]["BatchNorm_0"]["mean"], 0.0)
    plain, _ = get_task("classification").loss_fn(model)(
        params, variables, {"image": x, "label": labels}, jax.random.PRNGKey(3)
    )
    np.testing.assert_allclose(plain, numpy_cross_entropy(logits, labels).mean(), rtol=1e-5)
    assert jnp.isfinite(loss)
