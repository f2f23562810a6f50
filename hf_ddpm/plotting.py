"""Figures as files: grids of images with labelled rows and columns, and matplotlib without a display."""

from __future__ import annotations

import torch

from .images import make_grid

PIXELS_PER_CELL = 32  # small images are enlarged (nearest neighbour) to at least this size
DPI = 100


def tile(images: torch.Tensor):
    """[rows, columns, C, H, W] in [0, 1] → one PIL image, cells separated by 2 grey pixels and enlarged (nearest
    neighbour) to at least ``PIXELS_PER_CELL`` pixels."""
    from PIL import Image

    rows, columns = images.shape[:2]
    grid = make_grid(images.flatten(0, 1), nrow=columns, padding=2, pad_value=96)
    scale = max(1, -(-PIXELS_PER_CELL // images.shape[-1]))
    return grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST) if scale > 1 else grid


def save_grid(images: torch.Tensor, path, *, column_labels, row_labels=None, title: str = "") -> None:
    """:func:`tile` with the columns' (and rows') labels and a title, as a PNG."""
    plt = pyplot()
    grid = tile(images)
    rows, columns = images.shape[:2]
    left, right, top, bottom = 0.6, 0.15, 0.75, 0.3  # margins in inches: row labels, column labels, title
    width, height = grid.width / DPI, grid.height / DPI
    figure = plt.figure(figsize=(width + left + right, height + top + bottom), dpi=DPI)
    axes = figure.add_axes((left / (width + left + right), bottom / (height + top + bottom),
                            width / (width + left + right), height / (height + top + bottom)))
    axes.imshow(grid, cmap="gray" if grid.mode == "L" else None, vmin=0, vmax=255, interpolation="nearest")
    cell_w, cell_h = grid.width / columns, grid.height / rows
    axes.set_xticks([(c + 0.5) * cell_w for c in range(columns)], column_labels, rotation=60, fontsize=7,
                    ha="left", rotation_mode="anchor")
    axes.xaxis.tick_top()
    axes.set_yticks([(r + 0.5) * cell_h for r in range(rows)], row_labels or [""] * rows, fontsize=7)
    axes.tick_params(length=0)
    figure.text(0.5, 0.02, title, fontsize=8, ha="center", va="bottom")
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
