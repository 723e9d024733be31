r"""What a ConvNet learned: top image patches per unit, filters, feature maps, attributions.

  python experiments/visualize.py --workdir=DIR [--layers=conv1,conv2] [--units=0-15]
  python experiments/visualize.py --workdir=DIR --images='photos/*.png'
  python experiments/visualize.py --model=vgg16 --workdir=OUT [--weights=vgg16.safetensors]

With a training workdir, the model is rebuilt from ``DIR/config.json`` and its latest
checkpoint, the eval split of its dataset is mined, and the pictures go to
``DIR/visualize/`` (or ``--out``). With ``--images`` the given image files are mined
instead (through the eval preprocessing, at the trained input shape): the workdir alone
is enough, the dataset need not be on disk. With ``--model`` a zoo model is used, randomly
initialised or with converted torchvision weights (``--weights``), on ``--dataset``
(default: scikit-image's bundled photographs) at ``--image_size``; pictures go to
``--workdir`` (or ``--out``). Open ``index.html`` in the output folder.
"""

# JAX, TensorFlow and the drivers are imported in main(): --help answers at once.

from convjax.quiet import cli_main, quiet_startup

quiet_startup()  # before TensorFlow or JAX is imported

import glob  # noqa: E402
import os  # noqa: E402

from absl import app, flags  # noqa: E402

from convjax import distributed  # noqa: E402  (--jax_distributed)

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "A training workdir (config.json, checkpoints); with --model: the output."
)
_MODEL = flags.DEFINE_string("model", None, "A zoo model name instead of a trained workdir.")
_WEIGHTS = flags.DEFINE_string("weights", None, "With --model: torchvision weights file.")
_DATASET = flags.DEFINE_string("dataset", "skimage_images", "With --model: the tfds dataset.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "With --model: the input side.")
_CHANNELS = flags.DEFINE_integer("channels", 3, "With --model: input channels (1 or 3).")
_IMAGES = flags.DEFINE_string(
    "images", None, "A glob of image files to mine instead of the eval split."
)
_OUT = flags.DEFINE_string("out", None, "Output folder (default: see above).")
_LAYERS = flags.DEFINE_list("layers", None, "Layers to mine (default: every convolution).")
_UNITS = flags.DEFINE_string("units", None, "Units to draw: '0-15,32' or 'all' (default 16).")
_K = flags.DEFINE_integer("k", 9, "Patches per unit.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", None, "Mine at most this many images.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per mining batch (all devices).")
_STRATEGY = flags.DEFINE_enum("strategy", "auto", ["auto", "jit", "pmap", "shard_map"], "Devices.")
_ATTRIBUTIONS = flags.DEFINE_integer("attribution_images", 4, "Images in attributions.png.")
_MAXIMIZE = flags.DEFINE_integer("maximize_steps", 0, "Activation maximisation steps (0: off).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from convjax.quiet import quiet_logging
    from convjax.runs import visualize as viz_run

    quiet_logging()
    distributed.initialize()  # --jax_distributed: join a multi-host run
    paths = sorted(glob.glob(_IMAGES.value)) if _IMAGES.value else []
    if _IMAGES.value and not paths:
        raise app.UsageError(f"--images={_IMAGES.value!r} matches no file")
    try:
        if _MODEL.value:
            dataset = viz_run.zoo_dataset(_DATASET.value, _IMAGE_SIZE.value, _CHANNELS.value)
            network = viz_run.network_from_zoo(
                _MODEL.value, weights=_WEIGHTS.value, dataset=dataset
            )
            network = viz_run.with_images(network, paths) if paths else network
            out = _OUT.value or _WORKDIR.value
        else:
            network = viz_run.network_from_workdir(_WORKDIR.value, paths)
            out = _OUT.value or os.path.join(_WORKDIR.value, "visualize")
        figures = viz_run.visualize(
            network,
            out,
            layers=_LAYERS.value,
            units=_UNITS.value,
            k=_K.value,
            num_images=_NUM_IMAGES.value,
            batch_size=_BATCH_SIZE.value,
            strategy=_STRATEGY.value,
            attribution_images=_ATTRIBUTIONS.value,
            maximize_steps=_MAXIMIZE.value,
        )
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"wrote {len(figures['files'])} files to {out}; open {os.path.join(out, 'index.html')}")


if __name__ == "__main__":
    app.run(cli_main(main))
