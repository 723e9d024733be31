r"""Builds or downloads datasets ahead of training, so runs start without waiting.

  python experiments/prepare_data.py                                  # every offline convjax set
  python experiments/prepare_data.py --datasets=mnist,cifar10 --data_dir=/data/tfds
  python experiments/prepare_data.py --config=configs/lenet5_digits.py   # the config's dataset
  python experiments/prepare_data.py --datasets=imagenet2012 --manual_dir=/data/imagenet_tars

Offline convjax datasets are built from installed packages (no network). Hub datasets
are downloaded by tfds. Datasets that tfds cannot download (imagenet2012, ...) need
their files placed in the manual directory first (default
``<data_dir>/downloads/manual``; ``--manual_dir`` to use another): the command says
which files when they are missing. See docs/data.md.
"""

# TensorFlow and the data code are imported in main(): --help answers at once.

from convjax.quiet import cli_main, quiet_startup

quiet_startup()  # before TensorFlow or JAX is imported

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_DATASETS = flags.DEFINE_list("datasets", None, "tfds names (default: the offline ones).")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Prepare this config's dataset.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data directory (default: tfds').")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Manually downloaded files.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from convjax import data
    from convjax.data.prepare import prepare_datasets
    from convjax.quiet import quiet_logging

    quiet_logging()
    data_dir, manual_dir = _DATA_DIR.value, _MANUAL_DIR.value
    if _CONFIG.value is not None:
        names = [_CONFIG.value.dataset.name]
        data_dir = data_dir or _CONFIG.value.dataset.get("data_dir")
        manual_dir = manual_dir or _CONFIG.value.dataset.get("manual_dir")
    else:
        names = _DATASETS.value or data.offline_datasets()
    for prepared in prepare_datasets(names, data_dir=data_dir, manual_dir=manual_dir):
        sizes = ", ".join(f"{split}: {n:,}" for split, n in prepared.splits.items())
        print(f"{prepared.name:<28} {sizes:<48} {prepared.path}")


if __name__ == "__main__":
    app.run(cli_main(main))
