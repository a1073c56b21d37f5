"""The CTX crater scene: a 3 x 3 block of the Murray Lab CTX mosaic and its Robbins craters, and the rule
that says which window of a window grid over it is a crater window.

Data (`DATA/ctx-murray-craters`): tiles `resized_CTX/CTX{row}{col}_1248.png` (~95 m/px), stacked row by row
into a 3744 x 3744 scene, and 577 Robbins craters (1-32 km) as boxes `x1 y1 x2 y2` in that scene
(`selected_craters_XY.txt`).

Truth per window (`window_truth`): a window *is a crater* when a Robbins crater of comparable size
(W/4 <= diameter <= W) has its centre in the window's cell, so each such crater is exactly one positive
window. A window is *ambiguous* when it is not a crater window but shows a labelled crater in part: it holds
at least a quarter of a crater no larger than W (an off-cell, a too-small or a cut crater), it holds the
centre of a larger crater, or it touches the rim band (0.8-1.2 radii) of a crater larger than W. Every other
window is a *non-crater* window. Craters below the Robbins limit (1 km, ~10 px) are unlabelled and count as
non-crater terrain, as the catalogue does.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from common.errors import UserError
from tasks.windows import WindowGrid

DATASET = "ctx-murray-craters"
TILE = 1248
TRAIN_X = TILE  # samples come from windows wholly left of this column, scores from windows wholly right of it
CLASSES = ("crater", "non-crater")
WINDOW, STRIDE = 64, 32  # the grid the crater scoring maps with (and the ctx-craters task is cut from)
RIM_BAND = (0.8, 1.2)
MIN_OVERLAP = 0.25


def tile_paths(data_dir: Path) -> list[Path]:
    """The 3 x 3 tile files, row by row."""
    return [Path(data_dir) / DATASET / "resized_CTX" / f"CTX{r}{c}_{TILE}.png" for r in range(3) for c in range(3)]


def scene_files(data_dir: Path) -> list[Path]:
    """Every file the scene and its truth come from: the tiles, then the crater boxes."""
    return tile_paths(data_dir) + [Path(data_dir) / DATASET / "selected_craters_XY.txt"]


def scene_identity(data_dir: Path) -> str:
    """The scene's identity for results rows: the names and bytes (SHA-256) of scene_files, wherever they lie.
    A changed tile or crater file is another scene, whose scores are never taken for this one's."""
    from tasks.datasets.content import file_digests

    files = scene_files(data_dir)
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UserError(f"{missing[0]} is missing; set --data-dir or BENCH_DATA_DIR to the folder holding {DATASET}")
    h = hashlib.sha256()
    for f, digest in zip(files, file_digests(files)):
        h.update(f"{f.name}\x00{digest}\n".encode())
    return h.hexdigest()[:16]


def load_ctx(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(3744, 3744) uint8 scene stacked row by row from the 3 x 3 tiles, and (577, 4) crater boxes."""
    from tasks.imageio import read_image

    root = Path(data_dir) / DATASET
    if not root.is_dir():
        raise UserError(f"{root} not found; set --data-dir or BENCH_DATA_DIR to the folder holding {DATASET}")
    paths = iter(tile_paths(data_dir))
    rows = []
    for _ in range(3):
        row = []
        for _ in range(3):
            path = next(paths)
            if not path.is_file():
                raise UserError(f"CTX tile {path} is missing")
            row.append(np.asarray(read_image(path, "L", "CTX tile"), dtype=np.uint8))
            if row[-1].shape != (TILE, TILE):
                raise UserError(f"CTX tile {path} is {row[-1].shape}, expected {TILE} x {TILE}")
        rows.append(row)
    boxes = np.loadtxt(root / "selected_craters_XY.txt", dtype=np.float64, ndmin=2)
    if boxes.shape[1] != 4:
        raise UserError(f"{root / 'selected_craters_XY.txt'} must hold x1 y1 x2 y2 per line")
    return np.block(rows), boxes


def window_truth(grid: WindowGrid, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(crater, ambiguous) bool per window, by the rule in the module docstring."""
    w = grid.window
    x0, y0 = (a.astype(np.float64) for a in grid.origins())
    x1, y1 = x0 + w, y0 + w
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    diameter = ((boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1])) / 2
    comparable = (diameter >= w / 4) & (diameter <= w)
    crater = np.zeros(grid.n, bool)
    crater[grid.index_of(cx[comparable], cy[comparable])] = True
    shows_part = np.zeros(grid.n, bool)
    for (bx1, by1, bx2, by2), x, y, d in zip(boxes, cx, cy, diameter):
        if d <= w:
            overlap = np.clip(np.minimum(x1, bx2) - np.maximum(x0, bx1), 0, None) * np.clip(
                np.minimum(y1, by2) - np.maximum(y0, by1), 0, None
            )
            shows_part |= overlap >= MIN_OVERLAP * (bx2 - bx1) * (by2 - by1)
        else:
            r = d / 2
            near = np.hypot(np.clip(x, x0, x1) - x, np.clip(y, y0, y1) - y)  # nearest point of the window
            far = np.hypot(np.maximum(np.abs(x0 - x), np.abs(x1 - x)), np.maximum(np.abs(y0 - y), np.abs(y1 - y)))
            holds_centre = (x0 <= x) & (x < x1) & (y0 <= y) & (y < y1)
            shows_part |= holds_centre | ((near <= RIM_BAND[1] * r) & (far >= RIM_BAND[0] * r))
    return crater, shows_part & ~crater
