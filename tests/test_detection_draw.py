"""Drawing detections: boxes land on the right pixels in the class colour; the
precision-recall figure is a Figure with one curve per class that has ground truth;
no pyplot or backend switch anywhere in the drawing code."""

import subprocess
import sys

import numpy as np
from matplotlib.figure import Figure

from convjax.detection.draw import (
    PALETTE,
    draw_detections,
    image_grid,
    precision_recall_figure,
)


def test_box_outline_in_the_class_colour_at_the_scaled_pixels():
    image = np.zeros((20, 30, 3), np.float32)
    drawn = draw_detections(image, np.array([[5.0, 10.0, 15.0, 18.0]]), np.array([2]), scale=2)
    assert drawn.shape == (40, 60, 3) and drawn.dtype == np.uint8
    colour = np.array(PALETTE[2], np.uint8)
    # Left and right edges of the box (x = 10 and 30 after 2x scaling), below the label.
    for x in (10, 30):
        np.testing.assert_array_equal(drawn[30, x], colour)
    np.testing.assert_array_equal(drawn[30, 20], 0)  # inside: untouched
    np.testing.assert_array_equal(drawn[2, 55], 0)  # far from the box: untouched


def test_image_grid_places_tiles_row_major_with_white_padding():
    tiles = [np.full((4, 5, 3), 10 * (i + 1), np.uint8) for i in range(5)]
    grid = image_grid(tiles, columns=3, pad=1)
    assert grid.shape == (2 * 5 + 1, 3 * 6 + 1, 3)
    assert grid[0, 0, 0] == 255  # padding
    assert grid[1, 1, 0] == 10 and grid[1, 1 + 2 * 6, 0] == 30 and grid[6, 1 + 6, 0] == 50
    assert grid[6, 1 + 2 * 6, 0] == 255  # the empty sixth slot


def test_precision_recall_figure_skips_classes_without_ground_truth():
    precision = np.full((10, 101, 3, 4, 3), -1.0)
    precision[0, :, 0, 0, -1] = np.linspace(1.0, 0.2, 101)
    precision[0, :, 2, 0, -1] = 0.5
    figure = precision_recall_figure(precision, class_names=["circle", "square", "triangle"])
    assert isinstance(figure, Figure)
    (ax,) = figure.axes
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["circle (AP50 0.600)", "triangle (AP50 0.500)"]


def test_drawing_modules_leave_pyplot_and_the_backend_alone():
    code = (
        "import sys, matplotlib\n"
        "before = matplotlib.rcParams._get_backend_or_none()\n"
        "import convjax.detection.draw, convjax.face.metrics\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "assert matplotlib.rcParams._get_backend_or_none() == before, 'backend switched'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1500:]
