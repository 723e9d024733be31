"""Receptive fields traced from the models are exact.

For a sample of units of every spatial tap of LeNet-5, AlexNet, VGG-16, ResNet-18/50
and GoogLeNet (random weights):

- sound: changing every input pixel outside a unit's window leaves that unit's
  activation bit-identical (the real, nonlinear network);
- tight: on a linear variant of the same network (every ReLU the identity, every
  max-pool a sum pool), the unit's input gradient is non-zero on each of the four
  edges of its window clipped to the image: the bounding box of the gradient's
  support *is* the clipped window.

Published sizes and jumps are checked too (VGG-16 conv5_3: 196 px, jump 16; pool5:
212 px, jump 32; AlexNet conv5: 163 px; ResNet-50: 427 px, jump 32).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from model_testing import random_variables

from convjax.models import get_model
from convjax.models.summary import with_xla_convolutions
from convjax.models.taps import flatten_intermediates
from convjax.viz.geometry import GLOBAL, Field, Window, crop, crop_batch, receptive_fields
from convjax.viz.rewrite import is_relu, relu_operand, rewrite


@pytest.fixture(autouse=True, scope="module")
def fast_compile():
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def all_taps(model):
    """(variables, x) -> every spatial tap of ``model`` (variables are an argument, not
    constants baked into the compiled program)."""

    def taps(variables, x):
        _, state = model.apply(variables, x, mutable=["intermediates"], capture_intermediates=True)
        flat = flatten_intermediates(state["intermediates"])
        return {k: v for k, v in flat.items() if v.ndim == 4 and min(v.shape[1:3]) > 1}

    return taps


def linearised(eqn):
    """The linear variant: ReLU -> identity, max-pool -> sum-pool over the same window
    (``reduce_window_max`` -> sum, ``max`` of shifted views -> their sum, ``-inf`` pads -> 0)."""
    name = eqn.primitive.name
    if is_relu(eqn):
        return lambda *invals: [relu_operand(eqn, invals)]
    if name == "max":
        return lambda a, b: [a + b]
    if name == "pad":
        return lambda x, _: [lax.pad(x, jnp.zeros((), x.dtype), eqn.params["padding_config"])]
    if name == "reduce_window_max":
        p = eqn.params

        def sum_pool(x):
            return [
                lax.reduce_window(
                    x,
                    0.0,
                    lax.add,
                    p["window_dimensions"],
                    p["window_strides"],
                    p["padding"],
                    p["base_dilation"],
                    p["window_dilation"],
                )
            ]

        return sum_pool
    return None


CORNERS = ((0, 0), (-1, -1), (0.5, 0.5), (0, -1), (-1, 0), (0.25, 0.75))


def probes(fields, shapes, limit):
    """(tap, y, x, channels) units: a position per tap, every channel group."""
    out = []
    for i, (name, field) in enumerate(fields.items()):
        _, h, w, _ = shapes[name].shape
        fy, fx = CORNERS[i % len(CORNERS)]
        y = int(fy * (h - 1)) if fy >= 0 else h - 1
        x = int(fx * (w - 1)) if fx >= 0 else w - 1
        for start, stop, _ in field.channel_groups():
            channels = (
                np.arange(start, stop) if len(field.lo) > 1 else np.arange(shapes[name].shape[3])
            )
            out.append((name, y, x, channels))
    step = max(1, len(out) // limit)
    return out[::step]


def clipped(window: Window, height: int, width: int) -> tuple[int, int, int, int]:
    return (
        max(window.top, 0),
        max(window.left, 0),
        min(window.bottom, height),
        min(window.right, width),
    )


# name: (input side, channels, model kwargs); the classifiers are left out (no spatial taps).
# ResNets at 96: XLA:CPU takes a very slow path for 3x3 convolutions on 2x2 maps (64 input).
MODELS = {
    "lenet5": (32, 1, {}),
    "alexnet": (96, 3, {"include_top": False}),
    "vgg16": (64, 3, {"include_top": False}),
    "resnet18": (96, 3, {"include_top": False}),
    "resnet50": (96, 3, {"include_top": False}),
    "googlenet": (64, 3, {"num_classes": 10}),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_windows_are_sound_and_tight(name):
    size, channels, kwargs = MODELS[name]
    shape = (1, size, size, channels)
    model = get_model(name, **kwargs)
    variables = random_variables(model, shape)
    taps = all_taps(model)
    x0 = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    shapes = jax.eval_shape(taps, variables, x0)
    # The geometry of the network's math (XLA convolutions); the checks below run the
    # model as it is (on CPU its convolutions gather im2col patches).
    fields = receptive_fields(all_taps(with_xla_convolutions(model)), variables, x0, image_argnum=1)
    assert fields and all(isinstance(f, Field) for f in fields.values())
    units = probes(fields, shapes, limit=16)

    # Sound: each probe image differs from x0 everywhere outside its unit's window.
    rng = np.random.default_rng(1)
    images, windows = [], []
    for tap, y, x, channels in units:
        top, left, bottom, right = clipped(fields[tap].window(y, x, channels[0]), size, size)
        windows.append((top, left, bottom, right))
        inside = np.zeros((size, size, 1), bool)
        inside[top:bottom, left:right] = True
        noise = rng.uniform(-3, 3, size=x0.shape[1:]).astype(np.float32)
        images.append(np.where(inside, x0[0], x0[0] + noise))
    batch = np.concatenate([x0, np.stack(images)])
    acts = jax.jit(taps)(variables, batch)
    for i, (tap, y, x, channels) in enumerate(units, start=1):
        base = np.asarray(acts[tap][0, y, x, channels])
        probe = np.asarray(acts[tap][i, y, x, channels])
        assert np.array_equal(base.view(np.uint32), probe.view(np.uint32)), (tap, y, x)
    # The perturbation is not vacuous: some probe windows leave pixels outside.
    assert any(w != (0, 0, size, size) for w in windows)

    # Tight: the gradient support of the linear variant fills the clipped window.
    linear = rewrite(taps, linearised)

    def probe_sum(variables, xs):
        out = linear(variables, xs)
        return sum(out[tap][i, y, x, channels[0]] for i, (tap, y, x, channels) in enumerate(units))

    grad_fn = jax.jit(jax.grad(probe_sum, argnums=1))
    grads = np.asarray(grad_fn(variables, jnp.asarray(np.stack(images))))
    for grad, (tap, y, x, _), window in zip(grads, units, windows, strict=True):
        rows, cols = np.nonzero(np.any(grad != 0, axis=-1))
        support = (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
        assert support == window, (tap, y, x, support, window)


def test_published_sizes_and_jumps():
    def fields_of(name, size=224):
        model = with_xla_convolutions(get_model(name))
        x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
        variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
        return receptive_fields(all_taps(model), variables, x, image_argnum=1)

    vgg = fields_of("vgg16")
    assert (vgg["conv5_3"].size, vgg["conv5_3"].jump) == ((196, 196), (16, 16))
    assert (vgg["pool5"].size, vgg["pool5"].jump) == ((212, 212), (32, 32))
    assert (vgg["conv1_1"].size, vgg["conv1_1"].window(0, 0)) == ((3, 3), Window(-1, -1, 2, 2))
    alex = fields_of("alexnet")
    assert (alex["conv5"].size, alex["pool5"].size, alex["pool5"].jump) == (
        (163, 163),
        (195, 195),
        (32, 32),
    )
    resnet = fields_of("resnet50")
    assert (resnet["stage4"].size, resnet["stage4"].jump) == ((427, 427), (32, 32))


def test_inception_channels_keep_their_branch_windows():
    model = with_xla_convolutions(get_model("googlenet"))
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    fields = receptive_fields(all_taps(model), variables, x, image_argnum=1)
    block = fields["inception3a"]
    groups = [(start, stop, w.size[0]) for start, stop, w in block.channel_groups()]
    branches = [fields[f"inception3a/{b}"].size[0] for b in ("b1x1", "b3x3", "b5x5", "pool_proj")]
    assert [g[2] for g in groups] == branches == [27, 43, 59, 43]
    assert [g[1] for g in groups] == [64, 192, 224, 256]  # torchvision's branch widths


# One model per family and input kind (the deeper variants repeat the same blocks).
ZOO = (
    "alexnet_original",
    "embedding",
    "googlenet_torchvision",
    "inception_v1",
    "landmark_net",
    "localization_net",
    "nin",
    "plain20",
    "resnet20",
    "resnet34",
    "siamese_verifier",
    "simple_convnet",
    "vgg11_bn",
    "window_classifier_conv",
    "yolo",
)


def test_zoo_models_trace():
    for name in ZOO:
        model = with_xla_convolutions(get_model(name))
        shape = {"siamese_verifier": (1, 2, 64, 64, 3), "alexnet_original": (1, 96, 96, 3)}.get(
            name, (1, 64, 64, 3)
        )
        x = jax.ShapeDtypeStruct(shape, jnp.float32)
        variables = jax.eval_shape(lambda x, m=model: m.init(jax.random.key(0), x), x)

        def taps(variables, x, model=model):
            _, state = model.apply(
                variables, x, mutable=["intermediates"], capture_intermediates=True
            )
            return flatten_intermediates(state["intermediates"])

        axes = (2, 3) if len(shape) == 5 else (1, 2)
        fields = receptive_fields(taps, variables, x, image_argnum=1, spatial_axes=axes)
        for tap, value in jax.eval_shape(taps, variables, x).items():
            if value.ndim <= 2:  # flattened or pooled: no spatial axes
                assert fields[tap] in (GLOBAL, None), (name, tap)
            elif min(value.shape[value.ndim - 3 : value.ndim - 1]) > 1:
                assert isinstance(fields[tap], Field), (name, tap)


def test_general_convolutions_and_crops():
    # Branches concatenated on channels, then a grouped, strided, dilated convolution with
    # asymmetric padding, a slice and a pad: each output channel group keeps its branch.
    rng = np.random.default_rng(0)
    w_a, w_b = rng.normal(size=(1, 1, 4, 2)), rng.normal(size=(3, 3, 4, 2))
    w = rng.normal(size=(3, 2, 2, 6))
    dn = ("NHWC", "HWIO", "NHWC")

    def fn(x):
        a = lax.conv_general_dilated(x, w_a, (1, 1), "VALID", dimension_numbers=dn)
        b = lax.conv_general_dilated(x, w_b, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)
        y = lax.conv_general_dilated(
            jnp.concatenate([a, b], axis=-1),
            w,
            (2, 1),
            ((1, 0), (0, 2)),
            rhs_dilation=(1, 3),
            feature_group_count=2,
            dimension_numbers=dn,
        )
        return jnp.pad(y[:, 1:, :, :], ((0, 0), (2, 0), (0, 0), (0, 0)))

    x = rng.normal(size=(1, 17, 15, 4)).astype(np.float32)
    field = receptive_fields(fn, x)
    assert field.jump == (2, 1) and field.channel_axis == 3
    # rows: kernel 3, stride 2, pad 1; slice 1 (+2); pad 2 (-4): top -1 + 2 - 4 = -3.
    # cols: kernel 2 dilated 3: right = 1 + (2 - 1) * 3 = 4 (the 3x3 branch: -1 and 5).
    assert field.window(0, 0, channel=0) == Window(-3, 0, 0, 4)
    assert field.window(0, 0, channel=5) == Window(-4, -1, 1, 5)
    for channel in (0, 5):
        grad = jax.grad(lambda x, c=channel: fn(x)[0, 4, 2, c])(x)
        rows, cols = np.nonzero(np.any(np.asarray(grad[0]) != 0, axis=-1))
        support = (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
        assert support == clipped(field.window(4, 2, channel), 17, 15)

    image = np.arange(5 * 4 * 2, dtype=np.float32).reshape(5, 4, 2)
    patch, mask = crop(image, Window(-1, 2, 2, 6), fill=-7.0)
    assert patch.shape == (3, 4, 2) and mask.shape == (3, 4)
    np.testing.assert_array_equal(mask, [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]])
    np.testing.assert_array_equal(patch[1:, :2], image[0:2, 2:4])
    assert np.all(patch[~mask] == -7.0)
    patches, masks = crop_batch(
        image[None].repeat(2, 0), jnp.array([-1, 3]), jnp.array([2, -2]), (3, 4), fill=-7.0
    )
    np.testing.assert_array_equal(patches[0], patch)
    np.testing.assert_array_equal(masks[0], mask)
    patch1, mask1 = crop(image, Window(3, -2, 6, 2), fill=-7.0)
    np.testing.assert_array_equal(patches[1], patch1)
    np.testing.assert_array_equal(masks[1], mask1)
