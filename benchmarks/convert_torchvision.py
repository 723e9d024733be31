"""Real torchvision models, converted, against PyTorch: the largest logit difference.

    python benchmarks/convert_torchvision.py [--size 224]

Needs torchvision (optional; the tests build torchvision-layout networks from
torch.nn instead). Each model is created with random weights (no download), put
in eval mode with non-trivial BatchNorm statistics, exported with
``safetensors.torch.save_file(model.state_dict(), path)`` (the documented one-liner),
loaded with :func:`convjax.models.convert.load_torchvision`, and both frameworks
run the same images on the CPU in float32.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import jax
import numpy as np
import safetensors.torch
import torch
import torchvision

from convjax.models import get_model
from convjax.models.convert import load_torchvision

# convjax name -> (torchvision constructor, kwargs)
MODELS = {
    "resnet18": (torchvision.models.resnet18, {}),
    "resnet50": (torchvision.models.resnet50, {}),
    "vgg16": (torchvision.models.vgg16, {}),
    "vgg16_bn": (torchvision.models.vgg16_bn, {}),
    "alexnet": (torchvision.models.alexnet, {}),
    "googlenet_torchvision": (
        torchvision.models.googlenet,
        {"aux_logits": True, "init_weights": True, "transform_input": False},
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    cpu = jax.devices("cpu")[0]
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(args.batch, args.size, args.size, 3))
    x = x.astype(np.float32)
    print(
        f"torchvision {torchvision.__version__}, torch {torch.__version__}, "
        f"jax {jax.__version__}; input {x.shape} NHWC"
    )
    for name, (ctor, kwargs) in MODELS.items():
        net = ctor(weights=None, **kwargs).eval()
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.1)
            expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"{name}.safetensors")
            safetensors.torch.save_file(net.state_dict(), path)
            model = get_model(name, aux_logits=True) if "googlenet" in name else get_model(name)
            with jax.default_device(cpu):
                variables = load_torchvision(model, path)
                got = np.asarray(jax.jit(model.apply)(variables, x))
        diff = float(np.abs(got - expected).max())
        scale = float(np.abs(expected).max())
        verdict = "OK" if diff <= 1e-4 * max(1.0, scale) else "MISMATCH"
        print(
            f"{name:<24} max |logit diff| {diff:.2e} (logits up to {scale:.2f})  {verdict}",
            flush=True,
        )


if __name__ == "__main__":
    main()
