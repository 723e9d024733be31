"""torchvision-layout state dicts, converted, give PyTorch's logits (PyTorch CPU as reference).

torchvision itself is not needed: the reference networks are built here from torch.nn
with torchvision's module names, so their state_dict keys are torchvision's.
"""

import jax
import numpy as np
import pytest

from convjax.models import get_model
from convjax.models.convert import convert_torchvision, load_state_dict, load_torchvision
from convjax.models.taps import feature_extractor

torch = pytest.importorskip(
    "torch", reason='PyTorch CPU is an optional reference: pip install -e ".[torch]"'
)
tnn = torch.nn
safetensors_torch = pytest.importorskip("safetensors.torch")


@pytest.fixture(autouse=True, scope="module")
def fast_compile():
    jax.config.update("jax_disable_most_optimizations", True)
    torch.manual_seed(0)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


# ------------------------------------------------------------ torchvision's structure
class TorchBasicBlock(tnn.Module):
    expansion = 1

    def __init__(self, c_in, width, stride):
        super().__init__()
        self.conv1 = tnn.Conv2d(c_in, width, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(width)
        self.conv2 = tnn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(width)
        self.relu = tnn.ReLU()
        self.downsample = None
        if stride != 1 or c_in != width:
            self.downsample = tnn.Sequential(
                tnn.Conv2d(c_in, width, 1, stride, bias=False), tnn.BatchNorm2d(width)
            )

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, c_in, width, stride):
        super().__init__()
        self.conv1 = tnn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(width)
        self.conv2 = tnn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(width)
        self.conv3 = tnn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(width * 4)
        self.relu = tnn.ReLU()
        self.downsample = None
        if stride != 1 or c_in != width * 4:
            self.downsample = tnn.Sequential(
                tnn.Conv2d(c_in, width * 4, 1, stride, bias=False), tnn.BatchNorm2d(width * 4)
            )

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchResNet(tnn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.relu = tnn.ReLU()
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        c_in = 64
        for i, (blocks, width) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
            stage = []
            for j in range(blocks):
                stage.append(block(c_in, width, 2 if (i > 0 and j == 0) else 1))
                c_in = width * block.expansion
            setattr(self, f"layer{i + 1}", tnn.Sequential(*stage))
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.fc = tnn.Linear(c_in, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TorchVGG(tnn.Module):
    def __init__(self, stage_sizes, batch_norm=False, num_classes=1000, fc_width=4096):
        super().__init__()
        layers, c_in = [], 3
        for size, width in zip(stage_sizes, (64, 128, 256, 512, 512), strict=True):
            for _ in range(size):
                layers.append(tnn.Conv2d(c_in, width, 3, padding=1))
                if batch_norm:
                    layers.append(tnn.BatchNorm2d(width))
                layers.append(tnn.ReLU())
                c_in = width
            layers.append(tnn.MaxPool2d(2, 2))
        self.features = tnn.Sequential(*layers)
        self.avgpool = tnn.AdaptiveAvgPool2d(7)
        self.classifier = tnn.Sequential(
            tnn.Linear(512 * 49, fc_width), tnn.ReLU(), tnn.Dropout(),
            tnn.Linear(fc_width, fc_width), tnn.ReLU(), tnn.Dropout(),
            tnn.Linear(fc_width, num_classes),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TorchAlexNet(tnn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = tnn.Sequential(
            tnn.Conv2d(3, 64, 11, 4, 2), tnn.ReLU(), tnn.MaxPool2d(3, 2),
            tnn.Conv2d(64, 192, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(3, 2),
            tnn.Conv2d(192, 384, 3, padding=1), tnn.ReLU(),
            tnn.Conv2d(384, 256, 3, padding=1), tnn.ReLU(),
            tnn.Conv2d(256, 256, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(3, 2),
        )  # fmt: skip
        self.avgpool = tnn.AdaptiveAvgPool2d(6)
        self.classifier = tnn.Sequential(
            tnn.Dropout(), tnn.Linear(256 * 36, 4096), tnn.ReLU(),
            tnn.Dropout(), tnn.Linear(4096, 4096), tnn.ReLU(),
            tnn.Linear(4096, num_classes),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class BasicConv2d(tnn.Module):
    def __init__(self, c_in, c_out, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = tnn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False)
        self.bn = tnn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class TorchInception(tnn.Module):
    def __init__(self, c_in, b1, r3, b3, r5, b5, proj):
        super().__init__()
        self.branch1 = BasicConv2d(c_in, b1, 1)
        self.branch2 = tnn.Sequential(BasicConv2d(c_in, r3, 1), BasicConv2d(r3, b3, 3, padding=1))
        # torchvision's "5x5" branch is a 3x3 convolution
        self.branch3 = tnn.Sequential(BasicConv2d(c_in, r5, 1), BasicConv2d(r5, b5, 3, padding=1))
        self.branch4 = tnn.Sequential(
            tnn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(c_in, proj, 1)
        )

    def forward(self, x):
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([b(x) for b in branches], 1)


class TorchInceptionAux(tnn.Module):
    def __init__(self, c_in, num_classes):
        super().__init__()
        self.conv = BasicConv2d(c_in, 128, 1)
        self.fc1 = tnn.Linear(2048, 1024)
        self.fc2 = tnn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.conv(tnn.functional.adaptive_avg_pool2d(x, (4, 4)))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


class TorchGoogLeNet(tnn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, 7, 2, 3)
        self.maxpool1 = tnn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1)
        self.maxpool2 = tnn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception3a = TorchInception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = TorchInception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = tnn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception4a = TorchInception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = TorchInception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = TorchInception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = TorchInception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = TorchInception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = tnn.MaxPool2d(2, 2, ceil_mode=True)
        self.inception5a = TorchInception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = TorchInception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = TorchInceptionAux(512, num_classes)
        self.aux2 = TorchInceptionAux(528, num_classes)
        self.fc = tnn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        self.aux1_out = self.aux1(x)
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        return self.fc(torch.flatten(x.mean((2, 3)), 1))


def randomise_batchnorm(net):
    """Non-trivial BN statistics and affine parameters, so conversion of each is tested."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, tnn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def torch_logits(net, x_nhwc):
    with torch.no_grad():
        return net(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())).numpy()


def check_logits(name, net, shape, tmp_path=None, fmt="safetensors", **model_kwargs):
    """Exports ``net``'s state dict (to ``fmt`` under ``tmp_path``, or hands it over in
    memory when ``tmp_path`` is None), converts it and compares the logits."""
    net = randomise_batchnorm(net)
    model = get_model(name, **model_kwargs)
    if tmp_path is None:
        variables = convert_torchvision(model, {k: v.numpy() for k, v in net.state_dict().items()})
    else:
        path = tmp_path / f"{name}.{fmt}"
        if fmt == "safetensors":  # the documented one-liner export
            safetensors_torch.save_file(net.state_dict(), str(path))
        else:
            np.savez(path, **{k: v.numpy() for k, v in net.state_dict().items()})
        variables = load_torchvision(model, path)
    x = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
    expected = torch_logits(net, x)
    got = np.asarray(jax.jit(model.apply)(jax.device_put(variables), x))
    assert np.abs(expected).max() > 1e-2  # the comparison is not of near-zero numbers
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_resnet18(tmp_path):
    # odd size: stride-2 layers see odd inputs, where 'SAME' padding would differ
    check_logits("resnet18", TorchResNet(TorchBasicBlock, (2, 2, 2, 2)), (2, 65, 49, 3), tmp_path)


def test_resnet50(tmp_path):
    net = TorchResNet(TorchBottleneck, (3, 4, 6, 3), num_classes=10)
    check_logits("resnet50", net, (1, 64, 64, 3), tmp_path, fmt="npz", num_classes=10)


def test_vgg16():
    # 32x32: pool5 is 1x1 and the adaptive pool replicates it to 7x7, as torchvision does.
    # The full 138M-parameter network, handed over in memory (a 550 MB file costs seconds).
    check_logits("vgg16", TorchVGG((2, 2, 3, 3, 3)), (1, 32, 32, 3))


def test_vgg11_bn(tmp_path):
    # BatchNorm shifts torchvision's feature indices; a narrow classifier keeps it fast.
    net = TorchVGG((1, 1, 2, 2, 2), batch_norm=True, num_classes=10, fc_width=64)
    check_logits("vgg11_bn", net, (1, 64, 48, 3), tmp_path, num_classes=10, fc_width=64)


def test_alexnet(tmp_path):
    check_logits("alexnet", TorchAlexNet(), (2, 95, 95, 3), tmp_path)


def test_googlenet_with_aux_heads(tmp_path):
    net = randomise_batchnorm(TorchGoogLeNet(num_classes=10))
    path = tmp_path / "googlenet.safetensors"
    safetensors_torch.save_file(net.state_dict(), str(path))
    model = get_model("googlenet_torchvision", num_classes=10, aux_logits=True)
    variables = jax.device_put(load_torchvision(model, path))
    x = np.random.default_rng(0).uniform(size=(1, 64, 64, 3)).astype(np.float32)
    expected = torch_logits(net, x)
    taps = feature_extractor(model, ["output", "aux1"])(variables, x)
    np.testing.assert_allclose(taps["output"], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(taps["aux1"], net.aux1_out.detach().numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="googlenet_torchvision"):
        load_torchvision(get_model("googlenet", num_classes=10, aux_logits=True), path)


def test_errors_name_the_problem(tmp_path):
    net = TorchResNet(TorchBasicBlock, (2, 2, 2, 2))
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    missing = r"missing from the state dict: layer1.2.bn1.bias .* and \d+ more"
    with pytest.raises(ValueError, match=missing):
        convert_torchvision(get_model("resnet34"), state)
    with pytest.raises(ValueError, match=r"fc.weight \(1000, 512\) -> head/kernel \(512, 10\)"):
        convert_torchvision(get_model("resnet18", num_classes=10), state)
    del state["layer1.0.bn1.running_var"]
    state["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="not used by ResNet: extra.weight"):
        restored = {**state, "layer1.0.bn1.running_var": np.ones(64, np.float32)}
        convert_torchvision(get_model("resnet18"), restored)
    with pytest.raises(ValueError, match="layer1.0.bn1.running_var"):
        convert_torchvision(get_model("resnet18"), state, strict=False)
    with pytest.raises(ValueError, match="never loaded"):
        load_state_dict(tmp_path / "model.pth")
    with pytest.raises(ValueError, match="No torchvision layout"):
        convert_torchvision(get_model("lenet5"), state)


def test_new_head_is_excluded(tmp_path):
    net = TorchResNet(TorchBasicBlock, (2, 2, 2, 2))
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    variables = convert_torchvision(get_model("resnet18", num_classes=10), state, exclude=["head"])
    assert "head" not in variables["params"]
    np.testing.assert_array_equal(
        variables["params"]["stage2"]["block0"]["downsample_conv"]["kernel"],
        state["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(variables["batch_stats"]["bn1"]["var"], state["bn1.running_var"])
