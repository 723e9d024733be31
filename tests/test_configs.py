"""Every experiment config: its resolved fields are the recorded ones, its ``:smoke``
variant runs offline and passes the training run's checks, unknown variants are refused,
and each file loads by path (as ``--config=configs/x.py`` does) from outside the checkout."""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import ml_collections
import pytest

from configs import common

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
SNAPSHOT = pathlib.Path(__file__).parent / "data" / "configs_snapshot.json"
# Every module with a get_config(): the helpers (common, __init__) have none.
NAMES = sorted(
    p.stem for p in CONFIG_DIR.glob("*.py") if "def get_config(" in p.read_text()
)
TRAINING = [n for n in NAMES if n != "style_transfer"]

# Fields changed on purpose since the snapshot was taken (from the configs before they
# shared configs/common.py): the yolo_voc, yolo_coco and facenet_lfw smoke variants used
# to need VOC / COCO / LFW downloads and now run on offline stand-in data; GoogLeNet's
# smoke variant trains at its recipe's learning rate for batch 8 (0.1 per 256 images).
GOOGLENET_SMOKE = {"optimizer.learning_rate": 0.1 * 8 / 256}
CHANGED = {
    "googlenet_imagenet:smoke": GOOGLENET_SMOKE,
    "googlenet_imagenet:googlenet_torchvision,smoke": GOOGLENET_SMOKE,
    "yolo_voc:smoke": {
        "dataset.name": "shapes/scenes_small",
        "dataset.train_split": "train",
        "model_kwargs.num_classes": 3,
        "class_names": None,
    },
    "yolo_coco:smoke": {
        "dataset.name": "shapes/scenes_small",
        "dataset.eval_split": "test",
        "model_kwargs.num_classes": 3,
    },
    "facenet_lfw:smoke": {
        "dataset.name": "identities/faces_small",
        "dataset.example_fn": "identities",
        "dataset.image_size": (32, 32),
        "dataset.eval_split": "test",
        "dataset.identity_split": {
            "source": "train+validation+test",
            "buckets": 10,
            "train": (0, 6),
            "validation": (6, 8),
            "test": (8, 10),
        },
        "face_eval.head_kinds": ("chi2",),
        "face_eval.head_steps": 100,
    },
}


# Every training config now uses the models' default convolution ('auto': the CPU-fast
# convjax.ops.conv_cpu on CPU hosts, XLA's own on GPU/TPU) instead of forcing XLA's.
CHANGED_EVERYWHERE = {"conv_impl": "auto"}
# Added to every config built by common.set_run since the snapshot: the device mesh and
# the state's partitioning of the gspmd strategy (data parallel by default).
ADDED_BY_SET_RUN = {"mesh": (("data", -1), ("fsdp", 1)), "partitioning": "replicate"}

# Style transfer took the training run's field names, and its checkpoint cadence and
# keep count (fixed in the driver before) became fields.
STYLE_RENAMED = {
    "num_steps": "num_train_steps",
    "strategy": "parallel",
    "log_every": "log_every_steps",
    "save_every": "save_every_steps",
}
STYLE_ADDED = {"checkpoint_every_steps": 100, "keep_checkpoints": 2}


# Every training config declares its evaluators (config.evals); the face configs' threshold
# settings moved from face_eval into their evaluators' options.
TASK_EVAL = {"eval": {"type": "task"}}
UNSEEN = {"threshold_split": "validation", "criterion": "accuracy", "target_far": 1e-3}


def face_evals(every_steps: int) -> dict:
    spec = {"split": "test", "every_steps": every_steps, "options": UNSEEN}
    return TASK_EVAL | {
        "verification": {"type": "verification", **spec},
        "one_shot": {"type": "one_shot", **spec},
    }


def expected_evals(key: str) -> dict | None:
    name, arg = key.split(":")
    smoke = "smoke" in arg
    if name == "style_transfer":
        return None
    if name.startswith("yolo_"):
        return TASK_EVAL | {"map": {"type": "detection"}}
    if name == "facenet_identities":
        return face_evals(0 if smoke else 2000)
    if name == "facenet_lfw":
        return face_evals(0 if smoke else 5000)
    return TASK_EVAL

# Every dataset section gained the preprocessing chains (None: the fields describe them)
# and on_decode_error; the ImageNet sections are now the standard chains (Inception crop
# at full resolution; resize the shorter side, centre crop) in place of a stretch to
# image_size with crops in JAX. Same side, crop area and extra augmentation as before.
NEW_DATASET_FIELDS = {"pp_train": None, "pp_eval": None, "on_decode_error": "skip"}


def dataset_changes(want: dict) -> dict:
    """The intended changes of one recorded dataset section (snapshot encoding)."""
    changes = dict(NEW_DATASET_FIELDS)
    if want["name"] not in ("imagenet2012", "imagenette/160px-v2"):
        return changes
    from convjax.data.config import imagenet_chains

    augment = want["augment"]
    area = (0.35, 1.0) if "scale=(0.35, 1.0)" in augment else (0.08, 1.0)
    train, evaluate = imagenet_chains(want["image_size"]["__tuple__"][0], crop_area=area)
    extra = "pca_lighting(std=0.1)" if "pca_lighting" in augment else ""
    none = dict.fromkeys(("image_size", "channels", "mean", "std"))
    return {**changes, **none, "pp_train": train, "pp_eval": evaluate, "augment": extra}


def encode(value):
    """A config as JSON-able data that keeps tuples apart from lists."""
    if isinstance(value, ml_collections.ConfigDict | dict):
        return {"__dict__": {k: encode(v) for k, v in sorted(value.items())}}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"unexpected config value {value!r}")


def assert_same(got, want, path=""):
    """Equal values of equal types (1 is not 1.0, a tuple is not a list)."""
    assert type(got) is type(want), f"{path}: {got!r} != {want!r}"
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), f"{path}: fields {sorted(got)} != {sorted(want)}"
        for key in want:
            assert_same(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), f"{path}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{path}[{i}]")
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def get_config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    module = importlib.import_module(f"configs.{name}")
    return module.get_config(arg) if arg else module.get_config()


def test_every_variant_resolves_to_its_recorded_fields():
    snapshot = json.loads(SNAPSHOT.read_text())
    assert {key.split(":")[0] for key in snapshot} == set(NAMES)
    for key, want in snapshot.items():
        name, arg = key.split(":")
        config = get_config(name, arg)
        changes = {f: v for f, v in CHANGED_EVERYWHERE.items() if f in want["__dict__"]}
        if "keep_checkpoints" in want["__dict__"]:  # set_run's tail
            changes.update(ADDED_BY_SET_RUN)
        if name == "style_transfer":
            fields = want["__dict__"]
            fields |= {new: fields.pop(old) for old, new in STYLE_RENAMED.items()}
            fields |= {f: encode(v) for f, v in STYLE_ADDED.items()}
        for field, value in {**changes, **CHANGED.get(key, {})}.items():
            *parents, last = field.split(".")
            section = want
            for part in parents:
                section = section["__dict__"][part]
            section["__dict__"][last] = encode(value)
        evals = expected_evals(key)
        if evals is not None:
            want["__dict__"]["evals"] = encode(ml_collections.ConfigDict(evals))
        if "face_eval" in want["__dict__"]:
            face_eval = want["__dict__"]["face_eval"]["__dict__"]
            for moved in ("validation_split", "test_split", "criterion", "target_far"):
                del face_eval[moved]
        if "dataset" in want["__dict__"]:
            dataset = want["__dict__"]["dataset"]["__dict__"]
            dataset.update({f: encode(v) for f, v in dataset_changes(dataset).items()})
        # JSON round trip: tuples inside the snapshot's lists come back as lists too.
        assert_same(json.loads(json.dumps(encode(config))), want, key)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_variants_are_refused_with_the_valid_ones(name):
    with pytest.raises(ValueError, match=r"Unknown config variant.*'smokey'.*valid: smoke"):
        get_config(name, "smokey")


def test_parse_arg_flags_values_models_and_aliases():
    arg = common.parse_arg(
        "resnet56,smoke,size=64", models=("resnet20", "resnet56"), model="resnet20",
        smoke=False, imagenette=False, size=32,
    )  # fmt: skip
    assert arg.to_dict() == {"model": "resnet56", "smoke": True, "imagenette": False, "size": 64}
    assert common.parse_arg(None, models=("a", "b"), model="b", smoke=False).model == "b"
    alias = common.parse_arg("both", aliases={"both": "x,y"}, x=False, y=False)
    assert alias.x and alias.y
    with pytest.raises(ValueError, match="several models"):
        common.parse_arg("a,b", models=("a", "b"), model="a")
    with pytest.raises(ValueError, match=r"\['smoke=1'\]; valid: smoke, size=<int>"):
        common.parse_arg("smoke=1", smoke=False, size=32)


def _is_offline(name: str) -> bool:
    from convjax.data import offline_datasets

    return name.split("/")[0].split(":")[0] in offline_datasets()


@pytest.mark.parametrize("name", TRAINING)
def test_smoke_variant_is_offline_and_passes_the_run_checks(name):
    """What the training run checks before it compiles: strategy and batch sizes, task,
    model, dataset metadata, and the model's initial state on the data's image shape."""
    from convjax.data.pipeline import dataset_metadata
    from convjax.tasks import get_task
    from convjax.train.parallel import get_strategy
    from convjax.train.setup import abstract_train_state, build_model, config_kwargs

    config = get_config(name, "smoke")
    assert _is_offline(config.dataset.name), config.dataset.name
    assert config.num_train_steps <= 20
    strategy = get_strategy(config.parallel)
    strategy.check_batch_size(config.batch_size)
    strategy.check_batch_size(config.eval_batch_size)
    model = build_model(config, strategy.axis_name)
    meta = dataset_metadata(config.dataset)
    assert meta.num_train >= config.batch_size and meta.num_eval > 0
    classes = config.model_kwargs.get("num_classes")
    if classes is not None and meta.num_classes is not None:
        assert classes == meta.num_classes
    if config.task == "transfer":
        # Its smoke run is given pretrained weights on the command line; it runs end to
        # end in tests/test_models_configs.py.
        return
    task = get_task(config.task, **config_kwargs(config.get("task_kwargs")))
    state = abstract_train_state(model, task, config, meta.image_shape)
    assert jax.tree.leaves(state.params)


def test_style_transfer_smoke_is_offline():
    config = get_config("style_transfer", "smoke")
    images = config.content.split(",") + config.style.split(",")
    assert all(spec.startswith("skimage:") for spec in images) and not config.network.weights


def test_every_config_loads_by_path_from_outside_the_checkout(tmp_path):
    """``--config=/path/configs/x.py[:smoke]`` through ml_collections' config_flags, from
    another working directory and without PYTHONPATH: the sibling imports (``from configs
    import common``) come from the installed ``configs`` package."""
    script = textwrap.dedent(
        """
        import sys
        from absl import flags
        from ml_collections import config_flags

        values = flags.FlagValues()
        config_flags.DEFINE_config_file("config", None, "config", flag_values=values)
        for path in sys.argv[1:]:
            for spec in (path, path + ":smoke"):
                values(["prog", f"--config={spec}"])
                assert values.config.get("seed") == 0, spec
        print("loaded", len(sys.argv) - 1)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    paths = [str(CONFIG_DIR / f"{name}.py") for name in NAMES]
    result = subprocess.run(
        [sys.executable, "-c", script, *paths],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"loaded {len(NAMES)}" in result.stdout
