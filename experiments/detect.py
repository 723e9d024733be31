r"""Evaluates a trained detector and draws its detections.

  python experiments/detect.py --workdir=DIR [--images='photos/*.png'] [--config=...]

Rebuilds the model from ``DIR/config.json`` (the config of the training run, overrides
included) and restores the latest checkpoint; train it first with experiments/train.py.
Without ``--images``, writes ``detection_metrics.json`` (VOC and COCO mAP on the eval
split), ``sample_detections.png`` and ``precision_recall.png`` to ``DIR``. With
``--images``, only draws: each matching image with its boxes, labels and scores under
``DIR/detections/`` (at its path relative to the folder holding all matches; files that
cannot be read are skipped with a warning), a few images at a time, so memory stays
flat however many match.
``--config`` is optional; when given it must be compatible with ``config.json``.
Drawing detections on ``--images`` needs the workdir alone, not the dataset.
"""

# JAX, TensorFlow and the drivers are imported in main(): --help answers at once.

from convjax.quiet import cli_main, quiet_startup

quiet_startup()  # before TensorFlow or JAX is imported

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from convjax import distributed  # noqa: E402  (--jax_distributed)

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Optional; defaults to the workdir's config.json."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir (config.json, checkpoints).")
_IMAGES = flags.DEFINE_string(
    "images", None, "Optional glob of images to draw detections on (** recurses)."
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import glob
    import os

    from convjax.quiet import quiet_logging

    quiet_logging()
    distributed.initialize()  # --jax_distributed: join a multi-host run
    matches = glob.glob(_IMAGES.value, recursive=True) if _IMAGES.value else []
    paths = sorted(path for path in matches if not os.path.isdir(path))
    if _IMAGES.value and not paths:
        raise app.UsageError(f"--images={_IMAGES.value!r} matches no file")
    from convjax.detection.metrics import format_metrics
    from convjax.runs.detect import detect_images, evaluate_workdir

    if paths:  # drawing only: the eval split's evaluation is the run without --images
        for path in detect_images(_WORKDIR.value, paths, config=_CONFIG.value):
            print("wrote", path)
        return
    metrics = evaluate_workdir(_WORKDIR.value, config=_CONFIG.value, announce=print)
    print(format_metrics(metrics), flush=True)


if __name__ == "__main__":
    app.run(cli_main(main))
