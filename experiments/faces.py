r"""Face verification and one-shot recognition from the command line.

    python experiments/faces.py train --config=configs/facenet_identities.py --workdir=DIR
    python experiments/faces.py evaluate --workdir=DIR

Verbs:
  train                      train the embedding (generic loop), then evaluate
  evaluate                   one-shot top-1, verification AUC/EER/TAR@FAR/10-fold,
                             threshold chosen on validation -> threshold.json, roc.png
  enroll NAME=IMAGE ...      add images to --gallery (created with the threshold)
  identify IMAGE ...         top --top_k identities with distances, or "unknown"
  verify IMAGE1 IMAGE2       distance and same/different at the saved threshold

Only ``train`` needs ``--config``; the other verbs rebuild the model from
``DIR/config.json`` (a ``--config`` given to them must be compatible with it).
Example (after `train`):

  python experiments/faces.py enroll --workdir=/tmp/facenet_identities \
      --gallery=/tmp/gallery.npz ann=ann.png bob=bob.png
  python experiments/faces.py identify --workdir=/tmp/facenet_identities \
      --gallery=/tmp/gallery.npz query.png
"""

# JAX, TensorFlow and the drivers are imported in main(): --help answers at once.

from convjax.quiet import cli_main, quiet_startup

quiet_startup()  # before TensorFlow or JAX is imported

import os  # noqa: E402

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from convjax import distributed  # noqa: E402  (--jax_distributed)

VERBS = ("train", "evaluate", "enroll", "identify", "verify")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (train); others default to the workdir's."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics, threshold and plots.")
_GALLERY = flags.DEFINE_string("gallery", None, "Gallery file (.npz) for enroll / identify.")
_TOP_K = flags.DEFINE_integer("top_k", 1, "Identities to list per image for identify.")
flags.mark_flags_as_required(["workdir"])


def _print_identification(paths: list[str], result) -> None:
    for i, path in enumerate(paths):
        ranked = ", ".join(
            f"{name} {d:.4f}"
            for name, d in zip(result.top_names[i], result.distances[i], strict=True)
        )
        best = result.names[i] or "unknown (not in the gallery)"
        print(f"{path}: {best} | top: {ranked}")


def _print_report(report: dict, workdir: str) -> None:
    """The headline figures of an evaluation report; the rest is in face_eval.json."""
    from convjax.face.evaluation import format_ten_fold
    from convjax.runs.faces import REPORT_JSON

    shot, verification = report["one_shot"], report["verification"]
    print(
        f"one-shot identification: top-1 {100 * shot['top1']:.2f} % over {shot['queries']:,} "
        f"queries of {shot['identities']:,} unseen identities"
    )
    print(
        f"verification on {verification['pairs']:,} test pairs: AUC {verification['auc']:.4f}, "
        f"EER {100 * verification['eer']:.2f} %, accuracy at the validation threshold "
        f"{100 * verification['accuracy_at_val_threshold']:.2f} %"
    )
    print(f"LFW-style 10-fold accuracy: {format_ten_fold(verification)}")
    for kind, head in report.get("verification_head", {}).items():
        accuracy = 100 * head["accuracy"]
        print(f"{kind} verification head: accuracy {accuracy:.2f} %, AUC {head['auc']:.4f}")
    print(f"full report: {os.path.join(workdir, REPORT_JSON)}")


def run(verb: str, args: list[str]) -> None:
    """Runs one verb and prints its result (see the module docstring)."""
    config, workdir = _CONFIG.value, _WORKDIR.value
    if verb not in VERBS:
        raise app.UsageError(f"Unknown verb {verb!r}; valid: {', '.join(VERBS)}")
    if verb in ("train", "evaluate") and args:
        raise app.UsageError(f"{verb} takes no arguments; got {args}")
    if verb == "train" and config is None:
        raise app.UsageError("train needs --config=configs/<experiment>.py")
    from convjax.runs import faces

    if verb == "train":
        _print_report(faces.train_and_evaluate(config, workdir, announce=print), workdir)
    elif verb == "evaluate":
        _print_report(faces.evaluate(workdir, config=config, announce=print), workdir)
    elif verb == "verify":
        if len(args) != 2:
            raise app.UsageError("verify takes two image paths")
        distance, same, threshold = faces.verify_files(workdir, *args, config=config)
        decision = "same person" if same else "different people"
        print(f"distance {distance:.4f} (threshold {threshold:.4f}): {decision}")
    else:
        if _GALLERY.value is None:
            raise app.UsageError(f"{verb} needs --gallery=FILE.npz")
        if not args:
            raise app.UsageError(f"{verb} needs at least one image")
        if verb == "enroll":
            gallery = faces.enroll_files(workdir, _GALLERY.value, args, config=config)
            print(
                f"{_GALLERY.value}: {gallery.num_identities} identities, "
                f"{gallery.num_embeddings} images, threshold {gallery.threshold:.4f}"
            )
        else:
            result = faces.identify_files(
                workdir, _GALLERY.value, args, _TOP_K.value, config=config
            )
            _print_identification(args, result)


def main(argv):
    if len(argv) < 2:
        raise app.UsageError(f"Give a verb: {', '.join(VERBS)}")
    from convjax.quiet import quiet_logging

    quiet_logging()
    distributed.initialize()  # --jax_distributed: join a multi-host run
    run(argv[1], argv[2:])


if __name__ == "__main__":
    app.run(cli_main(main))
