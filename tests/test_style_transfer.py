"""Style transfer through the generic train step: feature network, optimisation, options."""

import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from PIL import Image
from skimage.color import rgb2yuv

from configs.style_transfer import get_config
from convjax.models import features as F
from convjax.models.vgg import conv_init
from convjax.runs import images
from convjax.runs import stylize as T
from convjax.runs.style_config import OLD_NAMES
from convjax.runs.workdir import save_config
from convjax.style.inputs import blend_weights, scale_sizes
from convjax.style.optimizers import keep_in_range

SHALLOW = {"relu1_1": 0.5, "relu2_1": 0.5}


@pytest.fixture
def fast_compile():
    """Small runs are compile-bound: skip most XLA optimisations for them."""
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def small_config(**overrides) -> ml_collections.ConfigDict:
    """A tiny VGG-16 run on bundled images: 48 px, shallow layers, a few steps."""
    config = get_config("smoke")
    config.image_size = 48
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.style_layers = ml_collections.ConfigDict(SHALLOW)
    config.content_layers = ml_collections.ConfigDict({"relu2_2": 1.0})
    for key, value in overrides.items():
        config[key] = value
    return config


# --------------------------------------------------------------------------- feature network


def test_natural_first_layer_is_luminance_pattern_plus_flat_chroma():
    kernel = F.natural_first_layer((3, 3, 3, 16), np.random.default_rng(0))
    # The channel mean of each filter is its luminance pattern; what is left over is
    # a chroma that is the same at every position of the window and sums to zero.
    chroma = kernel - kernel.mean(axis=2, keepdims=True)
    np.testing.assert_allclose(chroma, np.broadcast_to(chroma[:1, :1], chroma.shape), atol=1e-6)
    np.testing.assert_allclose(chroma.sum(axis=2), 0.0, atol=1e-6)
    assert np.abs(chroma).max() > 1e-2
    luminance = kernel.mean(axis=2)
    assert luminance.std(axis=(0, 1)).min() > 1e-3  # a real spatial pattern


def test_random_network_keeps_activation_scale_through_all_layers():
    layers = [f"relu{i}_1" for i in range(1, 6)]
    net = F.build_feature_net(layers, arch="vgg19")
    assert not net.pretrained and "random-weight VGG-19" in net.description
    image = jnp.asarray(images.load_image("skimage:astronaut", (64, 64)))[None]
    extract = jax.jit(lambda variables, x: dataclasses.replace(net, variables=variables)(x))
    rms = [float(jnp.sqrt(jnp.mean(v**2))) for v in extract(net.variables, image).values()]
    # He fan-in keeps the scale within a small factor from relu1_1 to relu5_1 ...
    assert min(rms) > max(rms) / 2.5, rms
    # ... where the zoo's fan-out initialisation (torchvision's) loses over 4x.
    keys = iter(jax.random.split(jax.random.key(0), 32))
    fan_out = jax.tree.map(
        lambda v: conv_init(next(keys), v.shape) if v.ndim == 4 else v, net.variables
    )
    zoo_rms = [float(jnp.sqrt(jnp.mean(v**2))) for v in extract(fan_out, image).values()]
    assert zoo_rms[-1] < zoo_rms[0] / 4, zoo_rms


def test_pretrained_features_equal_pytorch_vgg19(tmp_path):
    torch = pytest.importorskip(
        "torch", reason='PyTorch CPU is an optional reference: pip install -e ".[torch]"'
    )
    safetensors_torch = pytest.importorskip("safetensors.torch", reason="needs safetensors+torch")
    # torchvision's vgg19().features layout, built from torch.nn (avg pooling as Gatys).
    widths = [64, 64, "P", 128, 128, "P", 256, 256, 256, 256, "P", 512, 512, 512, 512, "P"]
    widths += [512, 512, 512, 512, "P"]
    layers, names, c_in, stage, conv = [], {}, 3, 1, 1
    for w in widths:
        if w == "P":
            layers.append(torch.nn.AvgPool2d(2, 2))
            stage, conv = stage + 1, 1
            continue
        layers += [torch.nn.Conv2d(c_in, w, 3, padding=1), torch.nn.ReLU()]
        names[f"relu{stage}_{conv}"] = len(layers) - 1
        c_in, conv = w, conv + 1
    torch.manual_seed(0)
    features = torch.nn.Sequential(*layers).eval()
    state = {f"features.{k}": v.contiguous() for k, v in features.state_dict().items()}
    path = str(tmp_path / "vgg19.safetensors")
    safetensors_torch.save_file(state, path)

    net = F.build_feature_net(["relu1_1", "relu3_1", "relu4_2"], arch="vgg19", weights=path)
    assert net.pretrained and path in net.description
    image = images.load_image("skimage:chelsea", (48, 64))
    got = jax.jit(net)(jnp.asarray(image)[None])
    x = (torch.from_numpy(image) - torch.tensor(F.IMAGENET_MEAN)) / torch.tensor(F.IMAGENET_STD)
    x = x.permute(2, 0, 1)[None].float()
    with torch.no_grad():
        for layer in ("relu1_1", "relu3_1", "relu4_2"):
            want = features[: names[layer] + 1](x)[0].permute(1, 2, 0).numpy()
            scale = np.abs(want).max()
            np.testing.assert_allclose(np.asarray(got[layer][0]) / scale, want / scale, atol=1e-4)


def test_unknown_layers_and_archs_name_the_choices():
    with pytest.raises(ValueError, match="relu4_2"):
        F.build_feature_net(["relu9_9"])
    with pytest.raises(ValueError, match="vgg16, vgg19"):
        F.build_feature_net(["relu1_1"], arch="resnet50")


# --------------------------------------------------------------------------- optimisation


def test_keep_in_range_projects_the_update():
    tx = optax.chain(optax.sgd(1.0), keep_in_range(0.0, 1.0))
    params = jnp.array([0.1, 0.5, 0.9])
    updates, _ = tx.update(jnp.array([1.0, 0.1, -1.0]), tx.init(params), params)
    np.testing.assert_allclose(optax.apply_updates(params, updates), [0.0, 0.4, 1.0], atol=1e-7)


def test_style_cost_falls_100x_with_content_bounded_by_the_trade_off():
    """The acceptance run, small: random VGG-19 on chelsea / immunohistochemistry."""
    config = get_config()
    config.image_size = 48
    config.num_train_steps = 100
    config.optimizer.learning_rate = 0.05
    config.log_every_steps = 50
    result = T.stylize(config, progress=False)
    style0 = result.history["style"][0]
    # It starts at the content image: the content cost is rounding only (the content
    # features and the step's features come from two compiled programs).
    assert result.history["content"][0] <= 1e-6 * result.final["content"]
    drop = style0 / result.final["style"]
    assert drop >= 100, f"style cost fell only {drop:.1f}x"
    # J decreased from J(C) = beta * J_style(C), so alpha * J_content <= beta * J_style(C).
    alpha, beta = config.content_weight, config.style_weight
    assert alpha * result.final["content"] <= beta * style0
    assert result.images.shape == (1, 32, 48, 3)
    assert 0.0 <= result.images.min() and result.images.max() <= 1.0


def test_content_weight_sets_the_trade_off(fast_compile):
    finals = {}
    for alpha in (0.0, 100.0):
        config = small_config(content_weight=alpha, num_train_steps=15, style_weight=10.0)
        finals[alpha] = T.stylize(config, progress=False).final
    # More weight on content keeps the result much closer to the content ...
    assert finals[100.0]["content"] < 0.25 * finals[0.0]["content"], finals
    # ... at the price of a worse style match.
    assert finals[100.0]["style"] > finals[0.0]["style"], finals


def test_batch_of_pairs_over_devices_equals_one_image_at_a_time(fast_compile):
    contents = "skimage:chelsea,skimage:astronaut,skimage:coffee,skimage:rocket"
    styles = "skimage:immunohistochemistry,skimage:gravel,skimage:brick,skimage:grass"
    results = {}
    for strategy in ("pmap", "shard_map"):
        config = small_config(content=contents, style=styles, pair_styles=True, parallel=strategy)
        results[strategy] = T.stylize(config, progress=False)
    assert results["pmap"].images.shape[0] == 4
    np.testing.assert_allclose(results["pmap"].images, results["shard_map"].images, atol=2e-4)
    # Image 2 alone on one device: the same result, so each image got its own gradient.
    alone = small_config(content="skimage:coffee", style="skimage:brick", parallel="jit")
    single = T.stylize(alone, progress=False)
    np.testing.assert_allclose(results["pmap"].images[2], single.images[0], atol=2e-4)
    assert single.final["style"] < single.history["style"][0]


def test_lbfgs_runs_through_the_generic_step(fast_compile):
    config = small_config(num_train_steps=12, init="noise")
    config.optimizer = ml_collections.ConfigDict({"name": "lbfgs", "learning_rate": 1.0})
    result = T.stylize(config, progress=False)
    total = result.history["total"]
    assert np.all(np.isfinite(total))
    assert result.final["total"] < 0.2 * total[0], total
    assert 0.0 <= result.images.min() and result.images.max() <= 1.0


def test_preserve_color_keeps_the_content_chrominance(fast_compile):
    config = small_config(preserve_color=True, num_train_steps=6)
    result = T.stylize(config, progress=False)
    content = images.load_image("skimage:chelsea", 48)
    got, want = rgb2yuv(result.images[0]), rgb2yuv(content)
    unclipped = np.all((result.images[0] > 0.01) & (result.images[0] < 0.99), axis=-1)
    assert unclipped.mean() > 0.5
    np.testing.assert_allclose(got[unclipped][:, 1:], want[unclipped][:, 1:], atol=2e-3)
    assert np.abs(got[..., 0] - want[..., 0]).max() > 0.01  # the luminance did change


def test_multiscale_blend_and_outputs(tmp_path, fast_compile):
    config = small_config(
        image_size=96,
        num_scales=2,
        num_train_steps=4,
        style="skimage:immunohistochemistry,skimage:gravel",
        style_blend_weights="3,1",
        style_scale=0.75,
        save_every_steps=2,
        init="mix",
    )
    result = T.stylize(config, str(tmp_path), progress=False)
    assert sorted(set(result.history["scale"])) == [0, 1]
    assert result.history["step"] == list(range(8))  # every iteration is recorded
    assert result.history["scale"] == [0] * 4 + [1] * 4
    assert result.images.shape == (1, 64, 96, 3)
    for name in ("result.png", "panel.png", "cost_curves.png", "costs.json"):
        assert os.path.getsize(tmp_path / name) > 0
    assert np.asarray(Image.open(tmp_path / "result.png")).shape == (64, 96, 3)
    snapshots = sorted(os.listdir(tmp_path / "iterations"))
    assert snapshots == [
        "scale0_00002_0.png",
        "scale0_00004_0.png",
        "scale1_00002_0.png",
        "scale1_00004_0.png",
    ]
    summary = json.loads((tmp_path / "costs.json").read_text())
    assert "random-weight" in summary["feature_net"]
    assert summary["final"]["style"] == pytest.approx(result.final["style"])


def test_blend_weights_and_scale_sizes():
    np.testing.assert_allclose(blend_weights("3,1", 2), [0.75, 0.25])
    np.testing.assert_allclose(blend_weights("", 3), [1 / 3] * 3)
    with pytest.raises(ValueError, match="one per style"):
        blend_weights("1,2,3", 2)
    assert scale_sizes((128, 190), 3, F.MIN_SIZE) == [(32, 48), (64, 95), (128, 190)]
    with pytest.raises(ValueError, match="fewer scales"):
        scale_sizes((64, 64), 3, F.MIN_SIZE)


def test_bad_configs_fail_before_compiling():
    with pytest.raises(ValueError, match="Valid layers"):
        T.stylize(small_config(style_layers={"relu9_1": 1.0}), progress=False)
    with pytest.raises(ValueError, match="content, noise, mix"):
        T.stylize(small_config(init="zeros"), progress=False)
    with pytest.raises(ValueError, match="one style per content"):
        T.stylize(small_config(content="skimage:chelsea,skimage:coffee", pair_styles=True))
    with pytest.raises(ValueError, match="does not divide"):
        T.stylize(
            small_config(content="skimage:chelsea,skimage:coffee,skimage:cat", parallel="pmap")
        )
    with pytest.raises(ValueError, match="gatys, course, pytorch"):
        T.stylize(small_config(normalization="johnson"), progress=False)
    with pytest.raises(ValueError, match="skimage:chelsea"):
        T.stylize(small_config(content="skimage:lena"), progress=False)


def test_interrupted_run_resumes_to_the_same_result(tmp_path, fast_compile):
    """Checkpoints of the optimised images: losing the newest ones costs only time."""
    config = small_config(image_size=96, num_scales=2, num_train_steps=4)
    config.checkpoint_every_steps = 2
    config.keep_checkpoints = 4
    whole = T.stylize(config, str(tmp_path), progress=False)
    checkpoints = tmp_path / "checkpoints"
    assert sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit()) == [2, 4, 6, 8]
    # Mid-scale (6: scale 1 at its step 2), then at the boundary (4: scale 0 finished).
    for lost, resumed_at in ((["8"], 6), (["6", "8"], 4)):
        for step in lost:
            shutil.rmtree(checkpoints / step)
        said = []
        again = T.stylize(config, str(tmp_path), progress=False, announce=said.append)
        assert f"resuming after iteration {resumed_at} of 8 from the workdir's checkpoint" in said
        np.testing.assert_allclose(again.images, whole.images, atol=1e-6)
        assert again.history["step"] == list(range(8))
        np.testing.assert_allclose(again.history["total"], whole.history["total"], rtol=1e-6)
        assert again.final == pytest.approx(whole.final, rel=1e-6)


def test_a_corrupt_newest_checkpoint_falls_back_through_the_checkpointer(tmp_path, fast_compile):
    """The shared Checkpointer's fallback: the unreadable step is set aside and named,
    the previous one (of the other scale, with a shorter history) is used."""
    config = small_config(image_size=96, num_scales=2, num_train_steps=4)
    config.checkpoint_every_steps = 4
    config.keep_checkpoints = 3
    whole = T.stylize(config, str(tmp_path), progress=False)
    checkpoints = tmp_path / "checkpoints"
    for path in (checkpoints / "8").rglob("_METADATA"):
        path.write_text("{ not json")
    said = []
    again = T.stylize(config, str(tmp_path), progress=False, announce=said.append)
    assert "resuming after iteration 4 of 8 from the workdir's checkpoint" in said
    assert [p.name for p in (checkpoints / "corrupt").iterdir()] == ["8-bad-metadata"]
    np.testing.assert_allclose(again.images, whole.images, atol=1e-6)
    assert again.history["step"] == list(range(8))


def _with_old_names(workdir) -> dict:
    """Rewrites ``workdir``'s config.json as runs before the training names wrote it:
    num_steps, strategy, log_every, save_every, and no checkpoint cadence or keep."""
    path = workdir / "config.json"
    record = json.loads(path.read_text())
    for old, new in OLD_NAMES.items():
        if new in record and old != "checkpoint_every":
            record[old] = record.pop(new)
    record.pop("checkpoint_every_steps"), record.pop("keep_checkpoints")
    path.write_text(json.dumps(record))
    return record


def test_a_workdir_saved_with_the_old_names_resumes(tmp_path, fast_compile):
    config = small_config(num_train_steps=6)
    config.checkpoint_every_steps = 3
    config.keep_checkpoints = 3
    whole = T.stylize(config, str(tmp_path), progress=False)
    old = _with_old_names(tmp_path)
    assert old["num_steps"] == 6 and "num_train_steps" not in old
    shutil.rmtree(tmp_path / "checkpoints" / "6")
    said = []
    again = T.stylize(None, str(tmp_path), progress=False, announce=said.append)
    notes = [line for line in said if "older field names" in line]
    assert len(notes) == 1 and "num_steps, strategy, log_every, save_every" in notes[0], said
    assert "resuming after iteration 3 of 6 from the workdir's checkpoint" in said
    np.testing.assert_allclose(again.images, whole.images, atol=1e-6)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["num_train_steps"] == 6 and "num_steps" not in saved  # read once
    assert saved["checkpoint_every_steps"] == 100 and saved["keep_checkpoints"] == 2
    said.clear()
    T.stylize(None, str(tmp_path), progress=False, announce=said.append)
    assert not [line for line in said if "older field names" in line]


def test_old_and_missing_names_in_a_given_config(tmp_path):
    config = small_config()
    config.num_steps = 3  # the old name beside the new one
    with pytest.raises(ValueError, match="sets both num_steps and num_train_steps"):
        T.stylize(config, progress=False)
    config = small_config()
    del config["keep_checkpoints"]
    with pytest.raises(ValueError, match="has no keep_checkpoints; start from"):
        T.stylize(config, progress=False)


def test_progress_is_one_line_per_log_step(fast_compile):
    said = []
    T.stylize(small_config(num_train_steps=4, log_every_steps=2), announce=said.append)
    lines = [line for line in said if line.startswith("step ")]
    assert [line.split(" | ")[0] for line in lines] == ["step 2/4 (50%)", "step 4/4 (100%)"]
    assert "content=" in lines[0] and "style=" in lines[0] and "compile" in lines[0]
    assert "steps/s" in lines[1] and lines[1].endswith("ETA 0:00:00")  # no evaluations to come


def test_a_workdir_keeps_its_config(tmp_path):
    save_config(small_config(num_train_steps=2), str(tmp_path))
    with pytest.raises(ValueError, match="num_train_steps: 2 -> 3"):
        T.stylize(small_config(num_train_steps=3), str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="no config given"):
        T.stylize(None, str(tmp_path / "empty"), progress=False)


def test_stylize_script_smoke_run_and_rerun_from_the_workdir_alone(tmp_path):
    """The user's command on the smoke config with overrides, then the workdir alone:
    the rerun takes the saved config (not the defaults) and its final checkpoint."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    script = os.path.join(root, "experiments", "stylize.py")
    config = f"--config={os.path.join(root, 'configs', 'style_transfer.py')}:smoke"
    overrides = ["--config.content=skimage:coffee", "--config.num_train_steps=6"]
    runs = []
    for args in ([config, *overrides], []):
        cmd = [sys.executable, script, *args, f"--workdir={tmp_path}"]
        out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "feature network: random-weight VGG-16" in out.stdout
        assert "style cost" in out.stdout and "lower" in out.stdout
        for name in ("result.png", "panel.png", "cost_curves.png", "costs.json", "config.json"):
            assert (tmp_path / name).exists(), name
        runs.append((out.stdout, json.loads((tmp_path / "costs.json").read_text())))
    assert "resuming" not in runs[0][0]
    assert "resuming after iteration 6 of 6" in runs[1][0]
    assert json.loads((tmp_path / "config.json").read_text())["content"] == "skimage:coffee"
    assert runs[0][1]["history"]["step"] == list(range(6))  # the override, not the smoke's 20
    assert runs[1][1] == runs[0][1]
    assert np.asarray(Image.open(tmp_path / "result.png")).shape == (32, 48, 3)
