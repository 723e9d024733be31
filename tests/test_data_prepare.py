"""Preparing datasets ahead of training: offline builds, manual-download guidance, the script."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from convjax.data.prepare import prepare_dataset, prepare_datasets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ManualOnlyDigits(tfds.core.GeneratorBasedBuilder):
    """A dataset tfds cannot download: it reads a file the user put in manual_dir."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put digits.npy (an int array) in the manual directory."

    def _info(self):
        # DatasetInfo directly: dataset_info_from_configs looks for metadata files next
        # to the builder's package, and this test module is not in a package.
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({"value": tfds.features.Scalar(np.int64)}),
        )

    def _split_generators(self, dl_manager):
        values = np.load(os.path.join(dl_manager.manual_dir, "digits.npy"))
        return {"train": ((i, {"value": int(v)}) for i, v in enumerate(values))}

    def _generate_examples(self):  # Unused: _split_generators yields the examples.
        raise NotImplementedError


def test_prepares_offline_sets_once(tmp_path):
    (prepared,) = prepare_datasets(["lfw_subset"], data_dir=str(tmp_path))
    assert prepared.splits == {"train": 150, "test": 50}
    assert tfds.builder("lfw_subset", data_dir=str(tmp_path)).is_prepared()
    mtime = os.path.getmtime(os.path.join(prepared.path, "dataset_info.json"))
    assert prepare_dataset("lfw_subset", data_dir=str(tmp_path)) == prepared
    assert os.path.getmtime(os.path.join(prepared.path, "dataset_info.json")) == mtime
    with pytest.raises(ValueError, match="offline datasets: .*sklearn_digits"):
        prepare_dataset("no_such_dataset", data_dir=str(tmp_path))


def test_manual_download_datasets_say_where_files_go(tmp_path):
    manual = tmp_path / "manual"
    with pytest.raises(ValueError, match=f"(?s)needs a manual download.*{manual}.*digits.npy"):
        prepare_dataset("manual_only_digits", data_dir=str(tmp_path), manual_dir=str(manual))
    manual.mkdir()
    np.save(manual / "digits.npy", np.array([3, 1, 4, 1, 5]))
    prepared = prepare_dataset("manual_only_digits", data_dir=str(tmp_path), manual_dir=str(manual))
    assert prepared.splits == {"train": 5}
    # The default manual directory is <data_dir>/downloads/manual.
    with pytest.raises(ValueError, match=str(tmp_path / "other" / "downloads" / "manual")):
        prepare_dataset("manual_only_digits", data_dir=str(tmp_path / "other"))


def test_prepare_data_script(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "experiments", "prepare_data.py"),
            "--datasets=lfw_subset",
            f"--data_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lfw_subset" in result.stdout and "train: 150, test: 50" in result.stdout
    assert tfds.builder("lfw_subset", data_dir=str(tmp_path)).is_prepared()
