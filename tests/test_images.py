"""make_grid: layout, padding, value mapping and channels, against direct numpy indexing."""

import numpy as np
import pytest
import torch
from PIL import Image

from hf_ddpm.images import make_grid


def test_grid_layout_and_padding_place_each_image():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 5, 4, 3), dtype=np.uint8)  # N=7, H=5, W=4, RGB
    grid = np.asarray(make_grid(images, nrow=3, padding=2, pad_value=9))
    assert grid.shape == (3 * 5 + 4 * 2, 3 * 4 + 4 * 2, 3)
    for index in range(7):
        row, column = divmod(index, 3)
        top, left = 2 + row * 7, 2 + column * 6
        np.testing.assert_array_equal(grid[top : top + 5, left : left + 4], images[index])
    assert (grid[:2] == 9).all() and (grid[:, :2] == 9).all()
    assert (grid[16:21, 8:12] == 9).all() and (grid[16:21, 14:18] == 9).all()  # the two empty cells


def test_float_inputs_map_like_the_pipelines_pil_output():
    values = torch.rand(4, 1, 3, 3, dtype=torch.float64)
    grid = np.asarray(make_grid(values))  # default ⌈√4⌉ = 2 per row, grey stays one channel
    assert grid.shape == (6, 6)
    expected = np.rint(values.numpy()[:, 0] * 255).astype(np.uint8)
    np.testing.assert_array_equal(grid[:3, 3:], expected[1])
    np.testing.assert_array_equal(grid[3:, :3], expected[2])
    pil = [Image.fromarray(e) for e in expected]
    np.testing.assert_array_equal(np.asarray(make_grid(pil)), grid)


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="empty"):
        make_grid([])
    with pytest.raises(ValueError, match="nrow"):
        make_grid(np.zeros((2, 4, 4), np.uint8), nrow=0)
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        make_grid(np.zeros((2, 4, 4, 2), np.uint8))
