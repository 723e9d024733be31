"""The workdir: what a training run leaves behind, and how to get a model back from it.

A workdir holds ``config.json`` (the config that produced its checkpoints),
``workdir_info.json`` (what inference needs besides the weights: input shape and
preprocessing, classes, dataset identity and split sizes, versions, parameter count),
``checkpoints/`` (orbax), the metrics files and ``results.json``. Every script that
reads a workdir rebuilds the model from its ``config.json`` with :func:`restore`, so
overrides given at training time never have to be repeated, and none needs the
training data on disk (only an evaluation on a dataset does).

``config.json`` is the config's JSON. JSON has one sequence type and untyped nulls,
so when a config holds Python lists, or fields declared with another type than their
value's (typed placeholders such as ``dataset.data_dir``, ``None`` until set), they
are listed under the extra top-level key ``"__types__"`` (``"lists"``: dotted paths;
``"fields"``: dotted path -> declared type); every other JSON array is read back as a
tuple. :func:`load_config` of :func:`save_config` gives back an
equal config with the same types.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from convjax.checkpoint_layout import CHECKPOINT_DIR
from convjax.data import pipeline
from convjax.evals import EvalContext, EvalResult, EvalState, Evaluator
from convjax.runs.files import read_json, replace_file
from convjax.tasks import Task, get_task
from convjax.train.checkpointing import Checkpointer
from convjax.train.parallel import get_strategy
from convjax.train.setup import abstract_train_state, build_model, config_kwargs
from convjax.train.state import TrainState

CONFIG_JSON = "config.json"
CONFIG_HISTORY_JSON = "config.{step}.json"  # the config that produced steps up to {step}
RESULTS_JSON = "results.json"
TYPES_KEY = "__types__"
TRAIN_COMMAND = "python experiments/train.py --config=configs/<experiment>.py --workdir={workdir}"

_FIELD_TYPES = {t.__name__: t for t in (str, int, float, bool, tuple, list, dict, object)}


def _list_paths(value: Any, path: str) -> list[str]:
    """Paths of the Python lists in ``value`` (a leaf), nested ones included."""
    if not isinstance(value, list | tuple):
        return []
    found = [path] if isinstance(value, list) else []
    for i, item in enumerate(value):
        found += _list_paths(item, f"{path}[{i}]")
    return found


def _field_types(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    """What JSON loses: ``{"lists": [paths of lists], "fields": {path: declared type}}``
    (declared types of fields, e.g. typed placeholders, that differ from their value's)."""
    lists: list[str] = []
    fields: dict[str, str] = {}
    for key in config.keys():
        value, path = config[key], f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            inner = _field_types(value, path + ".")
            lists += inner["lists"]
            fields |= inner["fields"]
            continue
        lists += _list_paths(value, path)
        declared = config.get_type(key)
        if declared is not type(value):
            if _FIELD_TYPES.get(declared.__name__) is not declared:
                raise ValueError(
                    f"config field {path!r} is declared {declared!r}; config.json keeps "
                    f"declared types {', '.join(_FIELD_TYPES)}"
                )
            fields[path] = declared.__name__
    return {"lists": lists, "fields": fields}


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes ``config`` to ``workdir/config.json`` (atomically) and returns the path."""
    os.makedirs(workdir, exist_ok=True)
    record = json.loads(config.to_json_best_effort())
    types = _field_types(config)
    if types["lists"] or types["fields"]:
        record[TYPES_KEY] = types
    path = os.path.join(workdir, CONFIG_JSON)
    with replace_file(path) as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    return path


def _as_python(value: Any, path: str, types: dict[str, Any]) -> Any:
    """JSON value -> config value: arrays become tuples (lists where recorded), fields
    with a recorded declared type become typed references."""
    if isinstance(value, dict):
        return {k: _as_python(v, f"{path}.{k}" if path else k, types) for k, v in value.items()}
    if isinstance(value, list):
        items = [_as_python(v, f"{path}[{i}]", types) for i, v in enumerate(value)]
        value = items if path in types["lists"] else tuple(items)
    if path in types["fields"]:
        declared = _FIELD_TYPES[types["fields"][path]]
        return ml_collections.FieldReference(value, field_type=declared)
    return value


def config_from_json(text: str | dict) -> ml_collections.ConfigDict:
    """The ConfigDict that :func:`save_config` wrote as ``text`` (or its parsed JSON)."""
    record = json.loads(text) if isinstance(text, str) else dict(text)
    types = {"lists": [], "fields": {}} | record.pop(TYPES_KEY, {})
    types["lists"] = set(types["lists"])
    return ml_collections.ConfigDict(_as_python(record, "", types))


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in ``workdir`` was trained with (its ``config.json``)."""
    path = os.path.join(workdir, CONFIG_JSON)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: {workdir} is not a training workdir. Train first: "
            + TRAIN_COMMAND.format(workdir=workdir)
        )
    record = read_json(path)
    if not isinstance(record, dict):
        raise ValueError(f"{path} holds a JSON {type(record).__name__}, not a config")
    return config_from_json(record)


@dataclasses.dataclass(frozen=True)
class Restored:
    """A trained run, back from its workdir.

    ``state``: the host TrainState (numpy arrays) of checkpoint ``step``; ``model`` and
    ``task`` are built from ``config`` (BatchNorm not synchronised over devices);
    ``image_shape`` and ``info`` come from ``workdir_info.json`` (no dataset needed).
    """

    config: ml_collections.ConfigDict
    model: nn.Module
    task: Task
    state: TrainState
    step: int
    image_shape: tuple[int, int, int] | None = None  # the model's input (H, W, C)
    info: dict[str, Any] | None = None  # workdir_info.json; None for an older workdir

    @property
    def inference_dataset(self) -> ml_collections.ConfigDict:
        """``config.dataset`` with ``image_size`` and ``channels`` set to the model's
        input: what :func:`convjax.runs.inference.model_inputs` needs to preprocess image
        files as the eval split, without the dataset on disk."""
        dataset = ml_collections.ConfigDict(self.config.dataset.to_dict())
        if self.image_shape is not None:
            dataset.image_size = tuple(self.image_shape[:2])
            dataset.channels = self.image_shape[2]
        return dataset

    @property
    def class_names(self) -> list[str] | None:
        """The class names the run recorded (``workdir_info.json``), if any."""
        return ((self.info or {}).get("classes") or {}).get("names")

    @property
    def variables(self) -> dict[str, Any]:
        """``{'params': ..., 'batch_stats': ...}``: what ``model.apply`` takes."""
        return {"params": self.state.params, **self.state.model_state}


def _flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key in config.keys():
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


def config_diff(
    old: ml_collections.ConfigDict,
    new: ml_collections.ConfigDict,
    *,
    limit: int = 8,
    only: Callable[[str], bool] | None = None,
) -> list[str]:
    """``'field: old -> new'`` for the (first ``limit``) fields that differ (those that
    ``only(dotted_name)`` accepts, when given)."""
    a, b = _flatten(old), _flatten(new)
    missing = object()
    lines = [
        f"{key}: {a.get(key, missing)!r} -> {b.get(key, missing)!r}".replace(repr(missing), "unset")
        for key in sorted(a.keys() | b.keys())
        if a.get(key, missing) != b.get(key, missing) and (only is None or only(key))
    ]
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


# What produced a workdir's checkpoints: changing these on resume is refused unless the
# user opts in (RESUME_OPT_IN). Cadences, step counts, strategy, seed and evaluation
# settings may change freely.
RESUME_FIELDS = ("model", "model_kwargs", "task", "task_kwargs", "optimizer", "dataset",
                 "batch_size", "dtype")  # fmt: skip
# Dataset fields that do not change the training examples.
RESUME_FREE_DATASET_FIELDS = ("data_dir", "manual_dir", "cache", "cache_max_bytes", "eval_split")
RESUME_OPT_IN = "resume_with_changed_config"


def is_resume_field(name: str) -> bool:
    """Whether the dotted config field ``name`` is part of what produced the checkpoints
    (see :data:`RESUME_FIELDS`)."""
    section, _, rest = name.partition(".")
    if section == "dataset":
        return rest.split(".")[0] not in RESUME_FREE_DATASET_FIELDS
    return section in RESUME_FIELDS


class ConfigChangedError(ValueError):
    """A resume whose model, dataset, task or optimizer differ from the workdir's."""


def check_resume(
    workdir: str, config: ml_collections.ConfigDict, *, allow_changes: bool = False
) -> list[str]:
    """Compares ``config`` with ``workdir``'s ``config.json``: raises
    :class:`ConfigChangedError` (a short diff) when a :data:`RESUME_FIELDS` field differs
    and ``allow_changes`` is false; returns every difference (``[]``: the same config,
    or a new workdir)."""
    if not os.path.isfile(os.path.join(workdir, CONFIG_JSON)):
        return []
    saved = load_config(workdir)
    changed = config_diff(saved, config, only=is_resume_field)
    if changed and not allow_changes:
        raise ConfigChangedError(
            f"{workdir} was trained with another model, dataset or optimizer; (saved -> "
            f"given) {'; '.join(changed)}.\nUse a new --workdir or the saved config, or "
            f"train on anyway with experiments/train.py --{RESUME_OPT_IN} "
            f"({RESUME_OPT_IN}=True in Python)."
        )
    return config_diff(saved, config, limit=1000, only=lambda name: name != RESUME_OPT_IN)


def record_config(config: ml_collections.ConfigDict, workdir: str, *, step: int) -> str | None:
    """Makes ``config`` the workdir's ``config.json`` from ``step`` on, keeping the one it
    replaces as ``config.<step>.json`` (never overwritten). Returns the kept file's
    path, or None when there was none to keep."""
    path = os.path.join(workdir, CONFIG_JSON)
    kept = None
    if os.path.isfile(path):
        kept, n = os.path.join(workdir, CONFIG_HISTORY_JSON.format(step=step)), 1
        while os.path.exists(kept):
            n += 1
            kept = os.path.join(workdir, CONFIG_HISTORY_JSON.format(step=f"{step}.{n}"))
        os.replace(path, kept)
    save_config(config, workdir)
    return kept


def _shapes(state: TrainState) -> Any:
    return jax.tree.map(lambda x: (tuple(x.shape), np.dtype(x.dtype)), state.checkpoint_items())


def check_compatible(
    workdir: str,
    config: ml_collections.ConfigDict,
    abstract: TrainState,
    image_shape: tuple[int, int, int],
    *,
    allow_changes: bool | None = None,
) -> None:
    """Refuses ``config`` when its model, dataset, task or optimizer differ from
    ``workdir``'s ``config.json`` (:func:`check_resume`; ``allow_changes`` defaults to
    the config's ``resume_with_changed_config``), and always when its state
    (``abstract``, from ``jax.eval_shape``) does not fit the checkpoints that config
    produced; names the fields that differ. A workdir whose checkpoints have lost their
    ``config.json`` cannot be checked: it is refused unless ``allow_changes``."""
    if allow_changes is None:
        allow_changes = bool(config.get(RESUME_OPT_IN, False))
    if not os.path.isfile(os.path.join(workdir, CONFIG_JSON)):
        if not allow_changes:
            raise ConfigChangedError(
                f"{workdir} has checkpoints but no {CONFIG_JSON} (the config that produced "
                f"them), so this config cannot be checked against them. Put {CONFIG_JSON} "
                f"back, or take this config as the workdir's with experiments/train.py "
                f"--{RESUME_OPT_IN} ({RESUME_OPT_IN}=True in Python)."
            )
        return
    check_resume(workdir, config, allow_changes=allow_changes)
    saved = load_config(workdir)
    if not config_diff(saved, config, only=is_resume_field):
        return  # what produced the checkpoints is the same
    task = get_task(saved.task, **config_kwargs(saved.get("task_kwargs")))
    if saved.dataset != config.dataset:
        image_shape = pipeline.dataset_metadata(saved.dataset).image_shape
    saved_state = abstract_train_state(build_model(saved), task, saved, image_shape)
    if _shapes(saved_state) != _shapes(abstract):
        raise ValueError(
            f"{workdir} holds checkpoints of another model or optimizer; fields that differ "
            f"(saved -> given): {'; '.join(config_diff(saved, config))}. "
            "Use a new --workdir, or the saved config."
        )


def restore_state(
    checkpointer: Checkpointer, abstract: TrainState, step: int | None = None
) -> TrainState | None:
    """Checkpoint ``step`` (default: latest) restored into ``abstract`` (a TrainState of
    ``jax.ShapeDtypeStruct``, from :func:`~convjax.train.setup.abstract_train_state`) as
    a host TrainState, or, where its leaves carry a ``sharding``
    (:meth:`~convjax.train.parallel.Strategy.restore_target`), as arrays of that layout;
    ``None`` when there is no checkpoint."""
    items = checkpointer.restore(abstract.checkpoint_items(), step=step)
    return None if items is None else abstract.replace_from_checkpoint(items)


def restore(
    workdir: str, *, step: int | None = None, config: ml_collections.ConfigDict | None = None
) -> Restored:
    """Rebuilds the model and task of ``workdir`` and restores checkpoint ``step``
    (default: the latest). ``config`` defaults to the workdir's ``config.json``.

    The restore target is built with ``jax.eval_shape`` (no initialisation).
    """
    config = load_config(workdir) if config is None else config
    task = get_task(config.task, **config_kwargs(config.get("task_kwargs")))
    model = build_model(config)
    image_shape = input_shape(workdir, config)  # not the dataset: it need not be on disk
    abstract = abstract_train_state(model, task, config, image_shape)
    check_compatible(workdir, config, abstract, image_shape)  # a given config must fit
    checkpointer = Checkpointer(
        os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR), read_only=True
    )
    try:
        state = restore_state(checkpointer, abstract, step)
    finally:
        checkpointer.close()
    if state is None:
        raise FileNotFoundError(
            f"No checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)}; train first: "
            + TRAIN_COMMAND.format(workdir=workdir)
        )
    return Restored(
        config=config, model=model, task=task, state=state, step=int(state.step),
        image_shape=image_shape, info=read_workdir_info(workdir),
    )  # fmt: skip


# ------------------------------------------------------------- what inference needs
WORKDIR_INFO_JSON = "workdir_info.json"
WORKDIR_INFO_FORMAT = 1
# The dataset fields that decide how an image becomes a model input (the eval chain).
INFERENCE_FIELDS = ("example_fn", "image_key", "image_size", "resize_mode", "resize_method",
                    "channels", "mean", "std")  # fmt: skip


def _class_feature(features: Any, label_key: str) -> Any:
    """The dataset's ClassLabel: the top-level ``label_key`` one, else the first found
    (e.g. ``objects/label`` of a detection set); None when it has none."""
    import tensorflow_datasets as tfds  # noqa: PLC0415 -- with the tfds builder only

    if label_key in features.keys() and isinstance(features[label_key], tfds.features.ClassLabel):
        return features[label_key]
    pending = [features]
    while pending:
        feature = pending.pop(0)
        if isinstance(feature, tfds.features.ClassLabel):
            return feature
        if isinstance(feature, tfds.features.Sequence):
            pending.append(feature.feature)
        elif isinstance(feature, tfds.features.FeaturesDict):
            pending.extend(feature[key] for key in feature.keys())
    return None


def _dataset_info(dataset: ml_collections.ConfigDict) -> dict[str, Any]:
    """Name, version, split sizes and classes of ``dataset`` (its tfds builder, which a
    training run has prepared)."""
    from convjax.data.builders import get_builder  # noqa: PLC0415
    from convjax.data.config import resolve_dataset_config  # noqa: PLC0415

    config = resolve_dataset_config(dataset)
    builder = get_builder(config, prepare=False)
    classes = _class_feature(builder.info.features, config.label_key)
    names = list(classes.names) if classes is not None else None
    return {
        "name": config.name,
        "version": str(builder.info.version),
        "splits": {name: int(split.num_examples) for name, split in builder.info.splits.items()},
        "train_split": config.train_split,
        "eval_split": config.eval_split,
        "num_classes": config.num_classes or (len(names) if names is not None else None),
        "class_names": names,
    }


def workdir_info(
    config: ml_collections.ConfigDict, image_shape: tuple[int, int, int], params: Any
) -> dict[str, Any]:
    """What reading the workdir needs besides the weights: the input shape and the eval
    preprocessing (``dataset`` fields), classes, dataset identity, versions, parameter
    count."""
    import flax  # noqa: PLC0415

    import convjax  # noqa: PLC0415
    from convjax.data.config import resolve_dataset_config  # noqa: PLC0415

    dataset = resolve_dataset_config(config.dataset)
    preprocessing = {field: dataset.get(field) for field in INFERENCE_FIELDS}
    preprocessing["image_size"], preprocessing["channels"] = list(image_shape[:2]), image_shape[2]
    data = _dataset_info(config.dataset)
    names = config.get("class_names") or data["class_names"]
    return {
        "format": WORKDIR_INFO_FORMAT,
        "input_shape": list(image_shape),
        "preprocessing": preprocessing,
        "classes": {"count": data["num_classes"], "names": list(names) if names else None},
        "dataset": {k: v for k, v in data.items() if k not in ("num_classes", "class_names")},
        "versions": {
            "convjax": convjax.__version__,
            "jax": jax.__version__,
            "flax": flax.__version__,
        },  # fmt: skip
        "parameters": int(sum(np.size(x) for x in jax.tree.leaves(params))),
    }


def write_workdir_info(
    workdir: str, config: ml_collections.ConfigDict, image_shape: tuple[int, int, int], params: Any
) -> str:
    """Writes :func:`workdir_info` as ``workdir/workdir_info.json`` (atomically)."""
    path = os.path.join(workdir, WORKDIR_INFO_JSON)
    with replace_file(path) as f:
        json.dump(workdir_info(config, image_shape, params), f, indent=2)
        f.write("\n")
    return path


def read_workdir_info(workdir: str) -> dict[str, Any] | None:
    """The workdir's ``workdir_info.json``; None for a workdir written before it existed."""
    path = os.path.join(workdir, WORKDIR_INFO_JSON)
    if not os.path.isfile(path):
        return None
    return read_json(path)


def input_shape(workdir: str, config: ml_collections.ConfigDict) -> tuple[int, int, int]:
    """The model's input ``(H, W, C)``: from ``workdir_info.json``, or, for an older
    workdir without it, from the dataset (which must then be on disk; says so once)."""
    info = read_workdir_info(workdir)
    if info is not None:
        return tuple(int(d) for d in info["input_shape"])
    print(
        f"note: {workdir} has no {WORKDIR_INFO_JSON} (written by runs since it exists); "
        f"reading the input shape from dataset {config.dataset.name!r}",
        flush=True,
    )
    return pipeline.dataset_metadata(config.dataset).image_shape


class DatasetMissingError(FileNotFoundError):
    """An evaluation on a dataset that is not on disk."""


def require_dataset(dataset: ml_collections.ConfigDict) -> None:
    """Raises :class:`DatasetMissingError` (one line: which dataset, where, and the
    command that builds it) unless ``dataset`` is prepared in its ``data_dir``."""
    from convjax.data.builders import get_builder, is_prepared  # noqa: PLC0415

    builder = get_builder(dataset, prepare=False)
    if not is_prepared(builder):
        data_dir = f" --data_dir={dataset.data_dir}" if dataset.get("data_dir") else ""
        raise DatasetMissingError(
            f"dataset {dataset.name!r} is not in {builder.data_dir}: evaluating needs it; "
            f"build it with python experiments/prepare_data.py --datasets={dataset.name}"
            f"{data_dir}"
        )


def eval_context(restored: Restored) -> EvalContext:
    """What the evaluators of ``restored.config`` share, for a restored workdir: the
    config's strategy and eval batch size, the restored model and task."""
    config = restored.config
    return EvalContext(
        config=config,
        model=restored.model,
        task=restored.task,
        strategy=get_strategy(config.get("parallel", "auto")),
        eval_batch_size=config.get("eval_batch_size") or config.batch_size,
    )


def evaluate_restored(
    restored: Restored, evaluators: list[Evaluator], *, state: EvalState | None = None
) -> dict[str, EvalResult]:
    """``evaluators`` (of :func:`eval_context`) on the restored state (or ``state`` of
    it, to share its work afterwards), each after a check that its dataset is on disk:
    the figures the run's last evaluation logged for the same checkpoint."""
    for evaluator in evaluators:
        require_dataset(evaluator.dataset)
    if state is None and evaluators:
        state = EvalState(evaluators[0].context.strategy, host=restored.state)
    return {e.name: e.evaluate(state) for e in evaluators}
