"""The ResNet-50 ImageNet recipes: torchvision's at 256, Goyal et al.'s linear scaling
with a 5-epoch warm-up for large batches, LARS from 8k (against its formula in numpy)."""

import numpy as np
import pytest

from configs import common, resnet_imagenet
from convjax.train.optimizers import make_optimizer


def test_large_batch_recipes_scale_the_learning_rate_and_warm_up():
    base = resnet_imagenet.get_config()
    assert (base.batch_size, base.optimizer.learning_rate, base.optimizer.warmup_steps) == (
        256, 0.1, 0,
    )  # fmt: skip
    goyal = resnet_imagenet.get_config("resnet50,batch=8192,label_smoothing=0.1")
    assert goyal.optimizer.learning_rate == pytest.approx(0.1 * 8192 / 256)
    assert goyal.optimizer.warmup_steps == 5 * common.IMAGENET_TRAIN // 8192  # 5 epochs
    assert goyal.optimizer.decay_boundaries == pytest.approx((30 / 90, 60 / 90, 80 / 90))
    assert goyal.num_train_steps == 90 * common.IMAGENET_TRAIN // 8192
    assert goyal.task_kwargs.label_smoothing == 0.1
    lars = resnet_imagenet.get_config("resnet50,lars,batch=32768")
    assert lars.optimizer.name == "lars" and lars.optimizer.warmup_steps > 0
    with pytest.raises(ValueError, match="lars is the recipe for batches of 8192 and more"):
        resnet_imagenet.get_config("resnet50,lars,batch=1024")


def test_lars_scales_kernels_by_their_trust_ratio_and_leaves_biases_plain():
    rng = np.random.default_rng(0)
    params = {"kernel": rng.normal(size=(3, 3, 4, 8)).astype(np.float32),
              "bias": rng.normal(size=(8,)).astype(np.float32)}  # fmt: skip
    grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
    config = {"name": "lars", "learning_rate": 2.0, "schedule": "constant",
              "weight_decay": 1e-4, "momentum": 0.9}  # fmt: skip
    tx = make_optimizer(config, num_steps=10)
    updates, _ = tx.update(grads, tx.init(params), params)
    decayed = grads["kernel"] + 1e-4 * params["kernel"]
    trust = 0.001 * np.linalg.norm(params["kernel"]) / np.linalg.norm(decayed)
    np.testing.assert_allclose(updates["kernel"], -2.0 * trust * decayed, rtol=1e-5)
    np.testing.assert_allclose(updates["bias"], -2.0 * grads["bias"], rtol=1e-6)
