"""The Colab notebooks: each runs headless from outside the checkout, and draws its figures.

Every ``colab/NN_*.ipynb`` is executed with nbclient in a fresh kernel whose working
directory is a temporary folder (so ``configs`` and ``convjax`` come from the installed
package, not the checkout), with its own empty tfds data directory in it (a fresh
runtime: each notebook builds the datasets it reads) and ``CONVJAX_SMOKE=1`` (every run
shrunk to seconds). A
notebook fails on any error cell, and on any cell tagged ``figure`` that produced no
``image/png`` output. One test per notebook, so pytest-xdist runs them in parallel.

The committed notebooks are also checked without running them: outputs present (they
were executed), cell ids, size, the install cell, and a Colab badge in both READMEs.

Finally, convjax must never switch matplotlib's backend: after a training run, a style
transfer run and drawing detections, an inline (Jupyter/Colab) backend is still active.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need the test extra")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need the test extra")

ROOT = Path(__file__).resolve().parents[1]
COLAB = ROOT / "colab"
NOTEBOOKS = sorted(COLAB.glob("[0-9][0-9]_*.ipynb"))
FIGURE_TAG = "figure"
MAX_BYTES = 3 * 1024 * 1024
CELL_TIMEOUT_S = 600
INLINE = "module://matplotlib_inline.backend_inline"


def _kernel_env(data_dir: Path) -> dict[str, str]:
    """The test process's environment for the kernel, minus what would hide a packaging
    problem (PYTHONPATH) or change the device count (the suite's 4 simulated devices),
    with tfds reading and building datasets in ``data_dir``: empty, as on a fresh
    runtime, so a notebook that reads a dataset it never built fails here."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "XLA_FLAGS") and not k.startswith("TFDS_")
    }
    env["CONVJAX_SMOKE"] = "1"
    env["TFDS_DATA_DIR"] = str(data_dir)
    return env


def _figure_cells_without_image(notebook) -> list[int]:
    missing = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or FIGURE_TAG not in cell.metadata.get("tags", []):
            continue
        if not any("image/png" in out.get("data", {}) for out in cell.get("outputs", [])):
            missing.append(index)
    return missing


def _error_outputs(notebook) -> list[str]:
    return [
        f"cell {index}: {out.ename}: {out.evalue}"
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.output_type == "error"
    ]


def test_every_notebook_is_found():
    names = [path.stem for path in NOTEBOOKS]
    assert names[0] == "00_quickstart", names
    assert len(names) >= 7, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_from_outside_the_checkout(path: Path, tmp_path: Path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []  # Judge this run's outputs, not the committed ones.
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    # Raises CellExecutionError on the first failing cell.
    client.execute(env=_kernel_env(tmp_path / "tensorflow_datasets"))
    assert not _error_outputs(notebook)
    missing = _figure_cells_without_image(notebook)
    assert not missing, f"{path.name}: figure cells {missing} produced no image/png"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_executed(path: Path):
    assert path.stat().st_size < MAX_BYTES, f"{path.name}: {path.stat().st_size:,} bytes"
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert (notebook.nbformat, notebook.nbformat_minor) >= (4, 5), "cell ids need nbformat 4.5"
    ids = [cell.get("id") for cell in notebook.cells]
    assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: missing or repeated cell ids"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    install = code[0].source
    assert "CONVJAX_REPO = " in install and "pip" in install and "jax.devices()" in install
    # The Colab way to ask for smoke runs, and an install that says what it does as it goes.
    assert install.startswith("# Smoke runs") and "\n# %env CONVJAX_SMOKE=1\n" in install
    assert "Installing convjax" in install and "minutes" in install and '"-q"' not in install
    assert 'find_spec("tensorflow")' in install  # no second TensorFlow beside Colab's
    assert not any("sys.path" in cell.source for cell in code), f"{path.name} edits sys.path"
    assert any(re.search(r"^\s*(from|import) convjax", c.source, re.M) for c in code)
    assert all(cell.get("execution_count") for cell in code), f"{path.name}: not executed"
    assert not _error_outputs(notebook), _error_outputs(notebook)
    assert sum(FIGURE_TAG in c.metadata.get("tags", []) for c in code) >= 1
    missing = _figure_cells_without_image(notebook)
    assert not missing, f"{path.name}: committed figure cells {missing} have no image"


@pytest.mark.parametrize("readme", [ROOT / "README.md", COLAB / "README.md"], ids=["main", "colab"])
def test_readmes_have_a_colab_badge_per_notebook(readme: Path):
    text = readme.read_text()
    for path in NOTEBOOKS:
        assert re.search(rf"colab\.research\.google\.com/github/\S+/colab/{path.name}", text), (
            f"{readme.relative_to(ROOT)} has no Open-in-Colab link for {path.name}"
        )


def test_convjax_keeps_the_inline_backend(tmp_path: Path):
    """Training, style transfer and drawing detections leave an inline backend in place."""
    from configs import lenet5_digits, style_transfer
    from convjax.detection.draw import draw_detections
    from convjax.runs.stylize import stylize
    from convjax.runs.train import train_and_evaluate

    original = matplotlib.get_backend()
    matplotlib.use(INLINE)  # what Jupyter and Colab kernels run
    import matplotlib.pyplot as plt

    try:
        config = lenet5_digits.get_config("smoke")
        config.num_train_steps, config.eval_every_steps = 2, 2
        train_and_evaluate(config, str(tmp_path / "lenet5"))
        assert matplotlib.get_backend() == INLINE
        config = style_transfer.get_config("smoke")
        config.num_train_steps = 2
        stylize(config, str(tmp_path / "style"))
        assert matplotlib.get_backend() == INLINE
        image = np.zeros((32, 32, 3), np.uint8)
        boxes = np.array([[4.0, 4.0, 20.0, 20.0]], np.float32)
        drawn = draw_detections(image, boxes, np.array([0]), np.array([0.9]), class_names=["sq"])
        assert drawn.shape == image.shape and drawn.any()
        assert matplotlib.get_backend() == INLINE
        plt.plot([0, 1])  # the user's next plot goes to the same backend
        assert matplotlib.get_backend() == INLINE
    finally:
        plt.close("all")
        matplotlib.use(original)
