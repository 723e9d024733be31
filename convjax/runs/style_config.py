"""A style-transfer config: its fields, the names it used before, the checks on resume,
and the :class:`Plan` read from it before anything compiles.

Every default lives in ``configs/style_transfer.py``; a config here must set every
field of :data:`FIELDS`. A config (a saved ``config.json``) with the names style
transfer used before it took the training run's (:data:`OLD_NAMES`) is read with a
one-line note; :func:`convjax.runs.stylize.stylize` then saves it with the new names.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from convjax.runs.workdir import CONFIG_JSON, ConfigChangedError, config_diff, load_config
from convjax.style.inputs import blend_weights, check_init
from convjax.tasks import get_task
from convjax.tasks.style import StyleTransferTask
from convjax.train.parallel import JitStrategy, ShardMapStrategy, Strategy, get_strategy

STYLIZE_COMMAND = "python experiments/stylize.py --config=configs/style_transfer.py --workdir={}"
# The fields of a style-transfer config (configs/style_transfer.py holds their defaults).
FIELDS = (
    "content", "style", "style_blend_weights", "pair_styles", "image_size", "style_scale",
    "preserve_color", "num_scales", "init", "init_noise_ratio", "network", "content_layers",
    "style_layers", "normalization", "content_weight", "style_weight", "tv_weight", "tv_kind",
    "optimizer", "num_train_steps", "parallel", "seed", "log_every_steps",
    "checkpoint_every_steps", "keep_checkpoints", "save_every_steps",
)  # fmt: skip
TASK_FIELDS = (
    "content_layers",
    "style_layers",
    "content_weight",
    "style_weight",
    "tv_weight",
    "normalization",
    "tv_kind",
)
# The names style transfer used before it took the training run's; a config (a saved
# config.json) with them is read once with a note and saved with the new names.
OLD_NAMES = {
    "num_steps": "num_train_steps",
    "strategy": "parallel",
    "log_every": "log_every_steps",
    "checkpoint_every": "checkpoint_every_steps",
    "save_every": "save_every_steps",
}
# What a run with the old names did for fields its config did not have.
OLD_IMPLICIT = {"checkpoint_every_steps": 100, "keep_checkpoints": 2}
# Fields a resumed run may change: cadences and the parallel strategy. Any other
# difference from the workdir's config.json is refused.
RESUME_FREE_FIELDS = (
    "parallel",
    "log_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "save_every_steps",
)


def split_specs(spec: str | Sequence[str]) -> list[str]:
    """``'a.png,skimage:chelsea'`` or a sequence -> a list of image specs."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [s.strip() for s in items if s and s.strip()]
    if not items:
        raise ValueError("no image given; e.g. --config.content=skimage:chelsea")
    return items


def choose_strategy(name: str, batch_size: int) -> Strategy:
    """The named strategy; ``'auto'`` takes shard_map over the most devices that divide
    ``batch_size`` (jit for one image), since one image cannot be split."""
    if name != "auto":
        strategy = get_strategy(name)
        strategy.check_batch_size(batch_size)
        return strategy
    n = max(d for d in range(1, jax.device_count() + 1) if batch_size % d == 0)
    return JitStrategy() if n == 1 else ShardMapStrategy(jax.devices()[:n])


# --------------------------------------------------------------------------- the config


def with_current_names(
    config: ml_collections.ConfigDict, where: str
) -> tuple[ml_collections.ConfigDict, str | None]:
    """``config`` with the old field names (:data:`OLD_NAMES`) renamed, and a one-line
    note saying so (``None`` when it had none). ``where`` names the config in the note."""
    old = [name for name in OLD_NAMES if name in config]
    if not old:
        return config, None
    both = [name for name in old if OLD_NAMES[name] in config]
    if both:
        raise ValueError(
            f"{where} sets both {both[0]} and {OLD_NAMES[both[0]]} (its current name); "
            f"set {OLD_NAMES[both[0]]} only"
        )
    record = config.to_dict()
    for name in old:
        record[OLD_NAMES[name]] = record.pop(name)
    for name, value in OLD_IMPLICIT.items():
        record.setdefault(name, value)
    note = (
        f"{where} uses the older field names {', '.join(old)}; read as "
        f"{', '.join(OLD_NAMES[n] for n in old)}"
    )
    return ml_collections.ConfigDict(record), note


def check_fields(config: ml_collections.ConfigDict) -> None:
    """Raises a one-line ``ValueError`` naming the fields ``config`` lacks."""
    missing = [name for name in FIELDS if name not in config]
    if missing:
        raise ValueError(
            f"the style-transfer config has no {', '.join(missing)}; start from "
            "configs/style_transfer.py (get_config()), which sets every field"
        )


def resolve_config(
    config: ml_collections.ConfigDict | None, workdir: str | None
) -> tuple[ml_collections.ConfigDict, list[str]]:
    """The config to run and the notes to show: ``config``, or the workdir's
    ``config.json`` when ``config`` is ``None``. A ``config`` that differs from the
    saved one in more than :data:`RESUME_FREE_FIELDS` is refused
    (:class:`~convjax.runs.workdir.ConfigChangedError`, with the fields that differ)."""
    notes, saved = [], None
    if workdir is not None and os.path.isfile(os.path.join(workdir, CONFIG_JSON)):
        saved, note = with_current_names(load_config(workdir), os.path.join(workdir, CONFIG_JSON))
        notes += [note] if note else []
    if config is None:
        if saved is None:
            raise ValueError(
                f"no config given and no {CONFIG_JSON} in {workdir}; start a run with "
                + STYLIZE_COMMAND.format(workdir or "DIR")
            )
        config = saved
    else:
        config, note = with_current_names(config, "the config")
        notes += [note] if note else []
    if saved is not None:
        free = lambda name: name.split(".")[0] not in RESUME_FREE_FIELDS  # noqa: E731
        diff = config_diff(saved, config, only=free)
        if diff:
            raise ConfigChangedError(
                f"{workdir} holds a style-transfer run with another config; fields that "
                f"differ (saved -> given): {'; '.join(diff)}. Give the workdir alone to "
                "continue the saved run, or use a new --workdir."
            )
    check_fields(config)
    return config, notes


@dataclasses.dataclass(frozen=True)
class Plan:
    """A style-transfer config, read and checked before anything compiles."""

    task: StyleTransferTask
    content_specs: list[str]
    style_specs: list[str]
    pair_styles: bool
    weights: np.ndarray  # [S] blend weights
    preserve_color: bool
    init: str
    num_train_steps: int  # per scale
    log_every_steps: int
    save_every_steps: int
    checkpoint_every_steps: int
    seed: int
    config: Mapping[str, Any]

    @property
    def channels(self) -> int:
        """Channels of the optimised images: 1 (luminance) or 3."""
        return 1 if self.preserve_color else 3


def read_plan(config: ml_collections.ConfigDict) -> Plan:
    """Reads ``config`` (every field of configs/style_transfer.py, see
    :func:`check_fields`); bad values raise ``ValueError``."""
    check_fields(config)
    fields = {key: config[key] for key in TASK_FIELDS}
    fields["content_layers"] = dict(fields["content_layers"])
    fields["style_layers"] = dict(fields["style_layers"])
    task = get_task("style_transfer", **fields)
    content_specs, style_specs = split_specs(config.content), split_specs(config.style)
    pair_styles = bool(config.pair_styles)
    if pair_styles and len(style_specs) != len(content_specs):
        raise ValueError(
            f"pair_styles needs one style per content image; got {len(content_specs)} "
            f"content and {len(style_specs)} style image(s)"
        )
    preserve_color = bool(config.preserve_color)
    if preserve_color and len(content_specs) > 1 and not pair_styles:
        raise ValueError(
            "preserve_color with several content images needs pair_styles=True "
            "(each style's luminance is matched to its own content image)"
        )
    check_init(str(config.init))
    return Plan(
        task=task,
        content_specs=content_specs,
        style_specs=style_specs,
        pair_styles=pair_styles,
        weights=blend_weights(config.style_blend_weights, len(style_specs)),
        preserve_color=preserve_color,
        init=str(config.init),
        num_train_steps=int(config.num_train_steps),
        log_every_steps=max(1, int(config.log_every_steps)),
        save_every_steps=int(config.save_every_steps),
        checkpoint_every_steps=int(config.checkpoint_every_steps),
        seed=int(config.seed),
        config=config,
    )
