"""Figures and the JSON summary of a map: label_map.png, overlay.png, summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmark.mapping.points import Points
from common.files import atomic_output, atomic_write_text
from tasks.windows import WindowGrid

PALETTE = [
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#ffe119",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#9a6324",
    "#800000",
    "#000075",
    "#808000",
    "#aaffc3",
    "#a9a9a9",
    "#fabed4",
]


def class_colours(n: int) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def area_fractions(grid: WindowGrid, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Fraction of the scene's pixels mapped to each class (cells weighted by their pixel areas); the cells of
    windows without a class (-1) count in the scene's area but for no class."""
    areas = grid.cell_areas().ravel()
    labels = labels.ravel()
    classified = labels >= 0
    return np.bincount(labels[classified], weights=areas[classified], minlength=n_classes) / areas.sum()


def render_maps(
    out: Path,
    scene,
    grid: WindowGrid,
    labels: np.ndarray,
    class_names,
    fractions,
    points: Points | None = None,
    preview: int = 1600,
    alpha: float = 0.4,
    title: str = "",
) -> list[str]:
    """label_map.png (classes with a legend) and overlay.png (classes over the scene), at most `preview` px."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    scale = min(1.0, preview / max(grid.height, grid.width))
    raster = grid.raster(labels, scale)
    colours = class_colours(len(class_names))
    cmap = ListedColormap(colours).with_extremes(under=(0, 0, 0, 0))  # windows without a class (-1): transparent
    handles = [
        Patch(color=colours[c], label=f"{name} ({100 * fractions[c]:.1f}%)") for c, name in enumerate(class_names)
    ]
    dpi = 100
    written = []
    for name, background in (("label_map.png", None), ("overlay.png", scene.preview(scale))):
        fig = _map_figure(raster, background, cmap, colours, handles, points, grid, alpha, title, dpi)
        with atomic_output(out / name) as tmp:
            fig.savefig(tmp, dpi=dpi)
        plt.close(fig)
        written.append(name)
    return written


def _map_figure(raster, background, cmap, colours, handles, points, grid: WindowGrid, alpha, title, dpi):
    """One figure: the class raster (over `background` with the labelled points, when there is one) and the
    legend in a strip below it."""
    import matplotlib.pyplot as plt

    h, w = raster.shape
    n_classes = len(colours)
    fig = plt.figure(figsize=(w / dpi, h / dpi + 0.5), dpi=dpi)
    band = 0.5 * dpi / (h + 0.5 * dpi)  # the legend's strip below the map
    ax = fig.add_axes([0, band, 1, 1 - band])
    ax.set_axis_off()
    if background is None:
        ax.imshow(raster, cmap=cmap, vmin=-0.5, vmax=n_classes - 0.5, interpolation="nearest")
    else:
        ax.imshow(background, interpolation="nearest")
        ax.imshow(raster, cmap=cmap, vmin=-0.5, vmax=n_classes - 0.5, interpolation="nearest", alpha=alpha)
        if points is not None:
            _draw_points(ax, points, colours, w, h, grid)
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=min(len(handles), 4),
        fontsize=8,
        frameon=False,
        title=title or None,
        title_fontsize=8,
    )
    return fig


def _draw_points(ax, points: Points, colours, w: int, h: int, grid: WindowGrid) -> None:
    """The labelled windows' points, class by class in the class's colour, scaled from the scene's pixels to the
    figure's `w` x `h`."""
    for c in range(len(colours)):
        sel = points.labels == c
        ax.scatter(
            points.x[sel] * w / grid.width,
            points.y[sel] * h / grid.height,
            s=14,
            marker="o",
            facecolor=colours[c],
            edgecolor="white",
            linewidth=0.8,
        )


def write_summary(path: Path, summary: dict) -> None:
    atomic_write_text(
        path, json.dumps(summary, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)) + "\n"
    )
