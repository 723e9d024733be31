r"""Face verification and one-shot recognition from the command line.

    python experiments/faces.py VERB --config=configs/x.py[:variant] --workdir=DIR [args]

Verbs:
  train                      train the embedding (generic loop), then evaluate
  evaluate                   one-shot top-1, verification AUC/EER/TAR@FAR/10-fold,
                             threshold chosen on validation -> threshold.json, roc.png
  enroll NAME=IMAGE ...      add images to --gallery (created with the threshold)
  identify IMAGE ...         top --top_k identities with distances, or "unknown"
  verify IMAGE1 IMAGE2       distance and same/different at the saved threshold

Example (after `train`):

  python experiments/faces.py enroll --config=configs/facenet_identities.py \
      --workdir=/tmp/facenet_identities --gallery=/tmp/gallery.npz ann=ann.png bob=bob.png
  python experiments/faces.py identify --config=configs/facenet_identities.py \
      --workdir=/tmp/facenet_identities --gallery=/tmp/gallery.npz query.png
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from convjax.face import experiment  # noqa: E402

VERBS = ("train", "evaluate", "enroll", "identify", "verify")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics, threshold and plots.")
_GALLERY = flags.DEFINE_string("gallery", None, "Gallery file (.npz) for enroll / identify.")
_TOP_K = flags.DEFINE_integer("top_k", 1, "Identities to list per image for identify.")
flags.mark_flags_as_required(["config", "workdir"])


def run(verb: str, args: list[str]) -> None:
    """Runs one verb and prints its result (see the module docstring)."""
    config, workdir = _CONFIG.value, _WORKDIR.value
    if verb not in VERBS:
        raise app.UsageError(f"Unknown verb {verb!r}; valid: {', '.join(VERBS)}")
    if verb in ("train", "evaluate"):
        if args:
            raise app.UsageError(f"{verb} takes no arguments; got {args}")
        fn = experiment.train_and_evaluate if verb == "train" else experiment.evaluate
        report = fn(config, workdir)
        print(json.dumps(report, indent=2, default=float))
    elif verb == "verify":
        if len(args) != 2:
            raise app.UsageError("verify takes two image paths")
        distance, same, threshold = experiment.verify_files(config, workdir, *args)
        decision = "same person" if same else "different people"
        print(f"distance {distance:.4f} (threshold {threshold:.4f}): {decision}")
    else:
        if _GALLERY.value is None:
            raise app.UsageError(f"{verb} needs --gallery=FILE.npz")
        if not args:
            raise app.UsageError(f"{verb} needs at least one image")
        if verb == "enroll":
            gallery = experiment.enroll_files(config, workdir, _GALLERY.value, args)
            print(
                f"{_GALLERY.value}: {gallery.num_identities} identities, "
                f"{gallery.num_embeddings} images, threshold {gallery.threshold}"
            )
        else:
            result = experiment.identify_files(config, workdir, _GALLERY.value, args, _TOP_K.value)
            for i, path in enumerate(args):
                ranked = ", ".join(
                    f"{name} {d:.4f}"
                    for name, d in zip(result.top_names[i], result.distances[i], strict=True)
                )
                best = result.names[i] or "unknown (not in the gallery)"
                print(f"{path}: {best} | top: {ranked}")


def main(argv):
    if len(argv) < 2:
        raise app.UsageError(f"Give a verb: {', '.join(VERBS)}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    run(argv[1], argv[2:])


if __name__ == "__main__":
    app.run(main)
