"""ctx-craters: windows of the CTX crater scene (`ctx-murray-craters`) as a labelled image set.

Windows: W = 64 px on the stride-32 grid that `bench map`'s crater scoring uses, labelled by the same rule
(`ctx_murray.window_truth`): *crater* when a Robbins crater of W/4..W px has its centre in the window's
cell, *non-crater* when the window shows no labelled crater in part; ambiguous windows are left out.
Only windows lying wholly inside one CTX tile are kept, so no two windows of different tiles share a pixel.
Every crater window is kept; non-crater windows only on a 64-px lattice inside each tile (no two of them
overlap), which keeps the set at about 2,900 windows instead of 13,000 near-duplicates.

Group: the CTX tile (`CTX{row}{col}`), so support and query never share a tile. Base/target: the tiles of
the left column (x < TRAIN_X, where `bench map`'s crater case draws its samples) are the base pool, the six
other tiles the target pool.

The feature pipeline reads images by path, so the windows are written once as PNG files into a derived
folder `<cache dir>/derived/ctx-craters-<key>/` (cache dir: BENCH_CACHE_DIR or ~/.cache/marsfsl), never
into the data directory. The key hashes the rule's version and settings, the image decoder's version and the
bytes of the scene's tiles and crater file, so a changed rule, decoder or scene makes a new folder; the folder is built in a temporary
sibling and renamed into place, so a reader never sees half of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from common.files import fsync_tree
from tasks.datasets.base import ImageTable, table_from_rows
from tasks.datasets.content import default_cache_dir
from tasks.datasets.ctx_murray import CLASSES, STRIDE, TILE, TRAIN_X, WINDOW, load_ctx, scene_identity, window_truth
from tasks.imageio import DECODER_VERSION
from tasks.windows import WindowGrid

RULE_VERSION = 1
LATTICE = 64
SCENE = 3 * TILE
MANIFEST = "windows.json"


def select_windows(grid: WindowGrid, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(window indices, labels as positions in CLASSES, tile names) of the kept windows, row-major."""
    crater, ambiguous = window_truth(grid, boxes)
    x0, y0 = grid.origins()
    tx, ty = x0 // TILE, y0 // TILE
    inside = ((x0 + grid.window - 1) // TILE == tx) & ((y0 + grid.window - 1) // TILE == ty)
    on_lattice = ((x0 - tx * TILE) % LATTICE == 0) & ((y0 - ty * TILE) % LATTICE == 0)
    keep = inside & (crater | (~ambiguous & on_lattice))
    idx = np.flatnonzero(keep)
    labels = np.where(crater[idx], CLASSES.index("crater"), CLASSES.index("non-crater"))
    tiles = np.array([f"CTX{r}{c}" for r, c in zip(ty[idx], tx[idx])], dtype=object)
    return idx, labels, tiles


def derived_key(data_dir: Path) -> str:
    settings = {
        "rule": RULE_VERSION,
        "window": WINDOW,
        "stride": STRIDE,
        "lattice": LATTICE,
        "decoder": DECODER_VERSION,
        "scene": scene_identity(data_dir),
    }  # tiles' and crater file's bytes
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def materialise(data_dir: Path, cache_dir: Path | None = None) -> Path:
    """The derived folder of window PNGs (built once, atomically) with its manifest of rows."""
    folder = Path(cache_dir or default_cache_dir()) / "derived" / f"ctx-craters-{derived_key(data_dir)}"
    if (folder / MANIFEST).is_file():
        return folder
    from PIL import Image

    scene, boxes = load_ctx(data_dir)
    grid = WindowGrid(SCENE, SCENE, WINDOW, STRIDE)
    idx, labels, tiles = select_windows(grid, boxes)
    x0, y0 = (a[idx] for a in grid.origins())
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        rows = []
        for x, y, label, tile in zip(x0, y0, labels, tiles):
            name = f"{CLASSES[label]}/{tile}_x{x:04d}_y{y:04d}.png"
            (tmp / CLASSES[label]).mkdir(exist_ok=True)
            Image.fromarray(scene[y : y + WINDOW, x : x + WINDOW]).save(tmp / name)
            rows.append({"file": name, "label": int(label), "group": str(tile), "x0": int(x), "y0": int(y)})
        (tmp / MANIFEST).write_text(json.dumps({"classes": list(CLASSES), "rows": rows}))
        fsync_tree(tmp)  # the rename below must never publish a folder whose files are not on disk yet
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same folder first: theirs is identical
            if not (folder / MANIFEST).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_ctx_craters(data_dir: Path, cache_dir: Path | None = None) -> ImageTable:
    folder = materialise(Path(data_dir), cache_dir)
    manifest = json.loads((folder / MANIFEST).read_text())
    rows = manifest["rows"]
    return table_from_rows(
        "ctx-craters",
        [folder / r["file"] for r in rows],
        [r["label"] for r in rows],
        [r["group"] for r in rows],
        manifest["classes"],
    )


def tile_split(table: ImageTable) -> tuple[np.ndarray, np.ndarray]:
    """(base, target): windows of the left tile column (x < TRAIN_X) and of the six other tiles."""
    column = np.array([int(g[-1]) for g in table.groups]) * TILE  # the tile's left edge
    return np.flatnonzero(column < TRAIN_X), np.flatnonzero(column >= TRAIN_X)
