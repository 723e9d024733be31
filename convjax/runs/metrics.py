"""A run's metrics in its workdir: TensorBoard (clu), a JSON-lines log, a CSV table and
a curves PNG."""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import time
from collections.abc import Mapping

import numpy as np
from absl import logging
from clu import metric_writers
from matplotlib.figure import Figure

from convjax.runs.files import replace_file
from convjax.runs.images import save_figure

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
CURVES_PNG = "training_curves.png"
TENSORBOARD_DIR = "tensorboard"


class MetricLogger:
    """Writes scalars for a split (``train``/``eval``) to every sink.

    On a resumed run, entries after the restored step are dropped first, from
    ``metrics.jsonl`` and from the TensorBoard event files (:func:`purge_events`), so
    both describe one uninterrupted run.
    """

    def __init__(self, workdir: str, *, resume_step: int = 0, enabled: bool = True):
        self.workdir = workdir
        self.enabled = enabled
        self.path = os.path.join(workdir, METRICS_JSONL)
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            records = [r for r in read_metrics(workdir) if r["step"] <= resume_step]
            with replace_file(self.path) as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
            purge_events(os.path.join(workdir, TENSORBOARD_DIR), after_step=resume_step)
        self.writer = metric_writers.create_default_writer(
            os.path.join(workdir, TENSORBOARD_DIR), just_logging=not enabled, asynchronous=False
        )

    def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
        values = {k: float(v) for k, v in scalars.items()}
        self.writer.write_scalars(step, {f"{split}/{k}": v for k, v in values.items()})
        if self.enabled:
            record = {"step": int(step), "split": split, "time": time.time(), **values}
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
        if self.enabled:
            write_csv(self.workdir)
            plot_curves(self.workdir)


def purge_events(directory: str, *, after_step: int) -> int:
    """Drops the summaries of steps after ``after_step`` from the TensorBoard event files
    in ``directory`` (each file rewritten atomically; a record cut short by a killed
    writer is dropped too), so a resumed run does not show those steps twice. Returns
    how many summaries were dropped."""
    paths = sorted(glob.glob(os.path.join(directory, "*tfevents*")))
    if not paths:
        return 0
    import tensorflow as tf  # noqa: PLC0415 -- only on a resume with event files
    from tensorflow.core.util import event_pb2  # noqa: PLC0415

    dropped = 0
    for path in paths:
        kept, cut_short, drop = [], False, 0
        try:
            for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
                event = event_pb2.Event.FromString(record)
                if event.HasField("summary") and event.step > after_step:
                    drop += 1
                else:
                    kept.append(record)
        except tf.errors.DataLossError:
            cut_short = True
        if drop or cut_short:
            temporary = os.path.join(directory, ".purging")
            with tf.io.TFRecordWriter(temporary) as writer:
                for record in kept:
                    writer.write(record)
            os.replace(temporary, path)
        dropped += drop
    return dropped


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``metrics.jsonl``. A last line cut short (a run killed while it
    wrote) is dropped with one warning; any other line that is not JSON raises a
    one-line ``ValueError`` naming the file and line."""
    path = os.path.join(workdir, METRICS_JSONL)
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        lines = [(n, line) for n, line in enumerate(f.read().split(b"\n"), 1) if line.strip()]
    records = []
    for n, line in lines:
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "step" not in record or "split" not in record:
                raise ValueError("not a metrics record")
        except ValueError as error:
            if n == lines[-1][0]:
                logging.warning("%s: dropped its last line, cut short (%s)", path, error)
                break
            raise ValueError(
                f"{path} line {n} is not a metrics record ({error}); fix or delete that line"
            ) from None
        records.append(record)
    return records


def write_csv(workdir: str) -> str:
    """metrics.csv: one row per (step, split) with every metric as a column."""
    records = read_metrics(workdir)
    columns = ["step", "split"] + sorted({k for r in records for k in r} - {"step", "split"})
    path = os.path.join(workdir, METRICS_CSV)
    with replace_file(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)
    return path


def curves_figure(records: list[dict]) -> Figure | None:
    """Loss first, then every other metric against step: train as a line, each evaluator
    (``eval``, ``map``, ``verification`` ...: the ``split`` column) as dots on a line;
    a metric several of them log shares one panel."""
    names = sorted({k for r in records for k in r} - {"step", "split", "time"})
    if not names:
        return None
    names = ["loss"] + [n for n in names if n != "loss"] if "loss" in names else names
    splits = list(dict.fromkeys(["train", "eval"] + [r["split"] for r in records]))
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.5 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for split in splits:
            style = "-" if split == "train" else "o-"
            points = [(r["step"], r[name]) for r in records if r["split"] == split and name in r]
            if points:
                x, y = np.array(points).T
                ax.plot(x, y, style, label=split, markersize=3)
        ax.set_title(name)
        ax.set_xlabel("step")
        if name == "loss" and all(r.get("loss", 1) > 0 for r in records):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_curves(workdir: str) -> str | None:
    """training_curves.png of the workdir's metrics (see :func:`curves_figure`)."""
    fig = curves_figure(read_metrics(workdir))
    if fig is None:
        return None
    return save_figure(fig, os.path.join(workdir, CURVES_PNG), dpi=100)
