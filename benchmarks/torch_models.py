"""The zoo architectures that ``vs_pytorch.py`` times, written in PyTorch (NCHW).

Each has the same layers and parameter count as its convjax model (the benchmark
asserts the counts are equal): ``lenet5``, ``resnet18_cifar``, ``resnet50`` (torchvision's
v1.5 structure) and ``vgg16_bn_cifar`` (VGG-16 with BatchNorm on 32x32 inputs,
``pool5`` flattened straight into a 512-512-classes classifier).
"""

from __future__ import annotations

import torch
from torch import nn


def lenet5(num_classes: int = 10) -> nn.Module:
    """6@5x5 -> max pool -> 16@5x5 -> max pool -> 120 -> 84 -> classes, ReLU."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)
    return [conv, nn.BatchNorm2d(c_out)]


class _Block(nn.Module):
    """Basic (two 3x3) or bottleneck (1x1, 3x3 strided, 1x1 x4) residual block."""

    def __init__(self, c_in: int, width: int, stride: int, bottleneck: bool):
        super().__init__()
        c_out = width * 4 if bottleneck else width
        if bottleneck:
            layers = [
                *_conv_bn(c_in, width, 1), nn.ReLU(),
                *_conv_bn(width, width, 3, stride), nn.ReLU(),
                *_conv_bn(width, c_out, 1),
            ]
        else:
            layers = [*_conv_bn(c_in, width, 3, stride), nn.ReLU(), *_conv_bn(width, width, 3)]
        self.branch = nn.Sequential(*layers)
        projection = stride != 1 or c_in != c_out
        self.shortcut = nn.Sequential(*_conv_bn(c_in, c_out, 1, stride)) if projection else None
        self.c_out = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.branch(x) + shortcut)


class ResNet(nn.Module):
    """Stem, four stages of blocks (64-128-256-512 base widths), global pool, head."""

    def __init__(self, stage_sizes, bottleneck: bool, stem: str, num_classes: int):
        super().__init__()
        if stem == "imagenet":
            stem_layers = [*_conv_bn(3, 64, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1)]
        else:
            stem_layers = [*_conv_bn(3, 64, 3, 1), nn.ReLU()]
        blocks, c_in = [], 64
        for i, (size, width) in enumerate(zip(stage_sizes, (64, 128, 256, 512), strict=True)):
            for j in range(size):
                block = _Block(c_in, width, 2 if i > 0 and j == 0 else 1, bottleneck)
                blocks.append(block)
                c_in = block.c_out
        self.features = nn.Sequential(*stem_layers, *blocks)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def vgg16_bn_cifar(num_classes: int = 10, fc_width: int = 512) -> nn.Module:
    """VGG-16-BN on 32x32: 13 conv-BN-ReLU, 5 max pools, 512 -> fc -> fc -> classes."""
    layers, c_in = [], 3
    for size, width in zip((2, 2, 3, 3, 3), (64, 128, 256, 512, 512), strict=True):
        for _ in range(size):
            layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            c_in = width
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(512, fc_width), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(fc_width, fc_width), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(fc_width, num_classes),
    )


TORCH_MODELS = {
    "lenet5": lambda: lenet5(10),
    "resnet18_cifar": lambda: ResNet((2, 2, 2, 2), False, "cifar", 10),
    "vgg16_bn_cifar": lambda: vgg16_bn_cifar(10),
    "resnet50": lambda: ResNet((3, 4, 6, 3), True, "imagenet", 1000),
}
