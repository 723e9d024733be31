"""Grid pictures: layout and per-filter / per-map normalisation checked by hand."""

import numpy as np
import pytest

from convjax.viz.grids import feature_map_grid, filter_grid, normalise, patch_grid, tile, upscale


def test_tile_layout():
    images = np.arange(5 * 2 * 3 * 1, dtype=np.float32).reshape(5, 2, 3, 1) / 30
    grid = tile(images, columns=3, pad=1, pad_value=-1.0)
    assert grid.shape == (2 * 3 + 1, 3 * 4 + 1, 1)
    np.testing.assert_array_equal(grid[1:3, 1:4], images[0])
    np.testing.assert_array_equal(grid[1:3, 9:12], images[2])
    np.testing.assert_array_equal(grid[4:6, 5:8], images[4])  # second row, second cell
    assert np.all(grid[4:6, 9:12] == -1.0) and np.all(grid[0] == -1.0)  # empty cell, border


def test_filters_and_feature_maps_are_normalised_one_by_one():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 4)) * np.array([1, 10, 100, 0])
    grid = filter_grid(kernel, columns=4, pad=1)
    assert grid.shape == (5, 17, 3)
    for i in range(3):
        cell = grid[1:4, 1 + 4 * i : 4 + 4 * i]
        f = kernel[..., i]
        np.testing.assert_allclose(cell, (f - f.min()) / (f.max() - f.min()), rtol=1e-5)
    assert np.all(grid[1:4, 13:16] == 0.5)  # a constant filter
    with pytest.raises(ValueError, match="C_in = 1 or 3"):
        filter_grid(np.zeros((3, 3, 16, 8)))
    act = np.random.default_rng(1).normal(size=(4, 5, 6))
    maps = feature_map_grid(act, columns=3, pad=0, scale=2)
    assert maps.shape == (16, 30, 1)
    first = act[..., 0]
    np.testing.assert_allclose(
        maps[:8, :10, 0],
        upscale(((first - first.min()) / np.ptp(first))[..., None], 2)[..., 0],
        rtol=1e-5,
    )
    np.testing.assert_allclose(normalise(np.ones((2, 2)), axes=(1,)), 0.5)


def test_patch_grid_centres_smaller_patches_and_greys_the_outside():
    big = np.full((4, 4, 1), 0.9, np.float32)
    small = np.full((2, 2, 1), 0.2, np.float32)
    mask = np.ones((4, 4), bool)
    mask[0] = False
    grid = patch_grid([[big, None], [small, big]], [[mask, None], [None, None]], pad=1, outside=0.5)
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1, 1)
    np.testing.assert_array_equal(grid[1, 1:5, 0], 0.5)  # masked row of the first patch
    np.testing.assert_array_equal(grid[2:5, 1:5, 0], np.float32(0.9))
    np.testing.assert_array_equal(grid[1:5, 6:10, 0], 0.5)  # empty slot
    np.testing.assert_array_equal(grid[7:9, 2:4, 0], np.float32(0.2))  # centred in its cell
    np.testing.assert_array_equal(grid[6, 1:5, 0], 0.5)
