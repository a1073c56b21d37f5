"""GIS outputs of a map, in the scene's CRS and geotransform (the `gis` extra: rasterio, pyogrio, shapely):

- `labels.tif`: uint8 class ids at the scene's resolution (every pixel takes its window's cell's class),
  a colour table (the figures' colours), the class names in the metadata (`CLASS_NAMES`, and `CLASS_<id>`
  on the band); 255 = no class (no-data in the scene, or a window left unclassified).
- `probabilities.tif`: float32, one band per class (named by the class), the window's softmax probabilities
  before smoothing; NaN = no class.
- `classes.gpkg`: a polygon per connected region (4-neighbour cells) of one class after smoothing, with
  `class_id`, `class`, `mean_probability` (the class's probability, averaged over the region's cells weighted
  by their areas), `windows` and `area` (in the CRS's units squared).

Rasters are written tile by tile, so memory does not grow with the scene. A scene without georeferencing
gives the same files in pixel coordinates (x = column, y = row; no CRS).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from benchmark.mapping.scene import apply_geotransform, import_rasterio
from common.files import atomic_output
from tasks.windows import WindowGrid

LABEL_NODATA = 255
TILE = 512
FILES = ("labels.tif", "probabilities.tif", "classes.gpkg")


def available() -> bool:
    try:
        import_rasterio("GIS outputs")
        import pyogrio  # noqa: F401  (the polygon layer)
        import shapely  # noqa: F401
    except Exception:
        return False
    return True


def _hex_rgba(colour: str) -> tuple[int, int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5)) + (255,)


def _profile(scene, count: int, dtype: str, nodata) -> dict:
    from affine import Affine
    from rasterio.crs import CRS

    transform = Affine.from_gdal(*scene.geotransform) if scene.geotransform else Affine.identity()
    return {
        "driver": "GTiff",
        "width": scene.width,
        "height": scene.height,
        "count": count,
        "dtype": dtype,
        "nodata": nodata,
        "crs": CRS.from_wkt(scene.crs_wkt) if scene.crs_wkt else None,
        "transform": transform,
        "tiled": True,
        "blockxsize": TILE,
        "blockysize": TILE,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }


def write_rasters(
    out: Path, scene, grid: WindowGrid, labels: np.ndarray, probs: np.ndarray, class_names, colours
) -> None:
    """labels.tif and probabilities.tif, tile by tile; scene pixels that are no-data get no class."""
    import rasterio

    with warnings.catch_warnings():  # a scene without georeferencing gives rasters in pixel coordinates
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        _write_rasters(out, scene, grid, labels, probs, class_names, colours)


def _write_rasters(
    out: Path, scene, grid: WindowGrid, labels: np.ndarray, probs: np.ndarray, class_names, colours
) -> None:
    import rasterio
    from rasterio.windows import Window

    n_classes = len(class_names)
    with (
        atomic_output(out / "labels.tif") as lab_path,
        atomic_output(out / "probabilities.tif") as prob_path,
        rasterio.open(lab_path, "w", **_profile(scene, 1, "uint8", LABEL_NODATA)) as lab_dst,
        rasterio.open(prob_path, "w", **_profile(scene, n_classes, "float32", np.nan)) as prob_dst,
    ):
        lab_dst.write_colormap(1, {c: _hex_rgba(colours[c]) for c in range(n_classes)})
        lab_dst.update_tags(CLASS_NAMES=json.dumps(list(class_names)))
        lab_dst.update_tags(1, **{f"CLASS_{c}": name for c, name in enumerate(class_names)})
        lab_dst.set_band_description(1, "class")
        for c, name in enumerate(class_names):
            prob_dst.set_band_description(c + 1, name)
        prob_dst.update_tags(CLASS_NAMES=json.dumps(list(class_names)))
        for r0 in range(0, scene.height, TILE):
            r1 = min(r0 + TILE, scene.height)
            rows = grid.row_of(np.arange(r0, r1) + 0.5)
            for c0 in range(0, scene.width, TILE):
                c1 = min(c0 + TILE, scene.width)
                cols = grid.column_of(np.arange(c0, c1) + 0.5)
                block = labels[rows[:, None], cols[None, :]]
                p = np.moveaxis(probs[rows[:, None], cols[None, :]], -1, 0)
                valid = scene.valid(c0, r0, c1 - c0, r1 - r0)
                if valid is not None:
                    block = np.where(valid, block, -1)
                    p = np.where(valid, p, np.nan)
                window = Window(c0, r0, c1 - c0, r1 - r0)
                lab_dst.write(np.where(block < 0, LABEL_NODATA, block).astype(np.uint8), 1, window=window)
                prob_dst.write(p.astype(np.float32), window=window)


def write_polygons(path: Path, scene, grid: WindowGrid, labels: np.ndarray, probs: np.ndarray, class_names) -> int:
    """classes.gpkg: one polygon per connected region of one class; returns the number of polygons."""
    import pyogrio
    import shapely
    from rasterio.features import shapes
    from scipy import ndimage

    regions = np.zeros(labels.shape, np.int32)
    region_class = [0]
    for c in range(len(class_names)):
        ids, n = ndimage.label(labels == c)  # 4-connectivity, as shapes() below
        regions[ids > 0] = ids[ids > 0] + len(region_class) - 1
        region_class += [c] * n
    region_class = np.asarray(region_class)
    areas = grid.cell_areas().astype(np.float64)
    n_regions = len(region_class) - 1
    flat = regions.ravel()
    own_prob = np.take_along_axis(np.nan_to_num(probs), np.maximum(labels, 0)[..., None], -1)[..., 0].ravel()
    weight = np.bincount(flat, weights=areas.ravel(), minlength=n_regions + 1)
    mean_prob = np.bincount(flat, weights=(own_prob * areas.ravel()), minlength=n_regions + 1) / np.maximum(weight, 1)
    windows = np.bincount(flat, minlength=n_regions + 1)
    # grid coordinates (cell column/row edges) -> scene pixels -> map coordinates
    edges_x, edges_y = grid.cell_edges("x").astype(np.float64), grid.cell_edges("y").astype(np.float64)
    geotransform = scene.geotransform or (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def grid_to_map(xy):
        px = np.interp(xy[:, 0], np.arange(len(edges_x)), edges_x)
        py = np.interp(xy[:, 1], np.arange(len(edges_y)), edges_y)
        return apply_geotransform(geotransform, px, py)

    geoms, ids = [], []
    for geojson, value in shapes(regions, mask=regions > 0, connectivity=4):
        geoms.append(shapely.geometry.shape(geojson))
        ids.append(int(value))
    ids = np.asarray(ids, np.int64)
    geoms = shapely.transform(np.asarray(geoms, dtype=object), grid_to_map) if geoms else np.empty(0, object)
    cls = region_class[ids] if len(ids) else np.empty(0, np.int64)
    with warnings.catch_warnings(), atomic_output(path) as tmp:  # no CRS: a scene without georeferencing
        warnings.simplefilter("ignore", UserWarning)
        pyogrio.raw.write(
            tmp,
            shapely.to_wkb(geoms) if len(geoms) else np.empty(0, object),
            [
                cls.astype(np.int32),
                np.asarray([class_names[c] for c in cls], dtype=object),
                mean_prob[ids].astype(np.float64),
                windows[ids].astype(np.int32),
                shapely.area(geoms).astype(np.float64) if len(geoms) else np.empty(0),
            ],
            ["class_id", "class", "mean_probability", "windows", "area"],
            layer="classes",
            driver="GPKG",
            geometry_type="Polygon",
            crs=scene.crs_wkt,
        )
    return len(geoms)


def write_gis(
    out: Path, scene, grid: WindowGrid, labels: np.ndarray, probs: np.ndarray, class_names, colours
) -> list[str]:
    write_rasters(out, scene, grid, labels, probs, class_names, colours)
    write_polygons(out / "classes.gpkg", scene, grid, labels, probs, class_names)
    return list(FILES)
