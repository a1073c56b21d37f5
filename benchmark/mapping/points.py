"""Labelled samples of a map: the windows the method adapts on.

Two sources:
- a CSV of pixel points (`x,y,label`; x = column, y = row): each point selects the window whose cell contains
  it;
- a vector layer GDAL reads (GeoPackage, GeoJSON, shapefile, ...; the `gis` extra) of points or polygons with a
  label attribute (`label_field`), in any CRS: transformed into the scene's CRS, then into pixels by the
  scene's geotransform. A point selects the window whose cell contains it; a polygon selects every window
  whose cell it covers by more than half. On a scene without georeferencing, a layer without a CRS is read in
  pixel coordinates.
Every problem is a one-line UserError naming the file and the row or feature.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserError, closest
from common.files import atomic_write_text
from tasks.labels import check_class_names
from tasks.windows import WindowGrid

VECTOR_SUFFIXES = frozenset({".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite"})
COVER_FRACTION = 0.5  # a polygon selects the windows whose cells it covers by more than this fraction


@dataclass(frozen=True)
class Points:
    """Labelled samples: one window each."""

    x: np.ndarray  # pixel position of the sample (a point, or the centre of a polygon's window)
    y: np.ndarray
    labels: np.ndarray  # int, into class_names
    class_names: tuple[str, ...]
    windows: np.ndarray  # grid window index per sample (deduplicated)


def read_points(
    path: str | Path,
    grid: WindowGrid,
    classes: list[str] | None = None,
    min_per_class: int = 1,
    scene=None,
    label_field: str = "label",
) -> Points:
    """Samples from POINTS.csv or, by its suffix, a vector layer (`scene` gives its CRS and geotransform)."""
    path = Path(path)
    if path.suffix.lower() in VECTOR_SUFFIXES:
        xs, ys, names, where = _read_vector(path, grid, scene, label_field)
    else:
        xs, ys, names, where = _read_csv(path, grid)
    return _samples(path, grid, xs, ys, names, where, classes, min_per_class)


def _read_csv(path: Path, grid: WindowGrid):
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"labels file {path} does not exist") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise UserError(f"labels file {path} cannot be read as text ({type(exc).__name__})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if not {"x", "y", "label"} <= set(header):
        raise UserError(
            f"labels file {path} needs a header with columns x,y,label (pixel centres of windows "
            f"and class names), got {','.join(header) or 'nothing'}"
        )
    reader.fieldnames = header
    xs, ys, names, where = [], [], [], []
    for line, row in enumerate(reader, start=2):
        label = (row.get("label") or "").strip()
        try:
            x, y = float(row["x"]), float(row["y"])
        except (TypeError, ValueError):
            raise UserError(
                f"{path} line {line}: x and y must be numbers, got {row.get('x')!r}, {row.get('y')!r}"
            ) from None
        if not np.isfinite([x, y]).all():
            raise UserError(f"{path} line {line}: x and y must be finite numbers")
        if not label:
            raise UserError(f"{path} line {line}: empty label")
        if not (0 <= x < grid.width and 0 <= y < grid.height):
            raise UserError(
                f"{path} line {line}: point ({x:g}, {y:g}) is outside the scene "
                f"({grid.width} x {grid.height} pixels; x is the column, y the row)"
            )
        xs.append(x)
        ys.append(y)
        names.append(label)
        where.append(f"line {line}")
    return xs, ys, names, where


def _read_vector(path: Path, grid: WindowGrid, scene, label_field: str):
    shapes, labels, crs = _read_layer(path, label_field)
    shapes = _to_pixels(path, shapes, crs, scene)
    xs, ys, names, where = [], [], [], []
    cells_x, cells_y = grid.cell_edges("x"), grid.cell_edges("y")
    centres = grid.centres()
    for i, (shape, label) in enumerate(zip(shapes, labels), start=1):
        label = "" if label is None else str(label).strip()
        if not label:
            raise UserError(f"{path} feature {i}: empty {label_field!r}")
        if shape is None or shape.is_empty:
            raise UserError(f"{path} feature {i}: no geometry")
        kind = shape.geom_type
        if kind in ("Point", "MultiPoint"):
            for p in getattr(shape, "geoms", [shape]):
                if not (0 <= p.x < grid.width and 0 <= p.y < grid.height):
                    raise UserError(
                        f"{path} feature {i}: point lies outside the scene (at pixel {p.x:.1f}, "
                        f"{p.y:.1f} of {grid.width} x {grid.height}); check the layer's CRS"
                    )
                xs.append(p.x)
                ys.append(p.y)
                names.append(label)
                where.append(f"feature {i}")
        elif kind in ("Polygon", "MultiPolygon"):
            windows = _covered_windows(shape, grid, cells_x, cells_y)
            if len(windows) == 0:
                raise UserError(
                    f"{path} feature {i}: the polygon covers no window's cell by more than half "
                    f"(inside the scene); draw it larger, use a point, or a smaller --stride"
                )
            xs += centres[windows, 0].tolist()
            ys += centres[windows, 1].tolist()
            names += [label] * len(windows)
            where += [f"feature {i}"] * len(windows)
        else:
            raise UserError(f"{path} feature {i}: a {kind}; labels are points or polygons")
    return xs, ys, names, where


def _read_layer(path: Path, label_field: str):
    """The vector layer's geometries (shapely), their `label_field` values and the layer's CRS; a missing gis
    extra, file or attribute, an unreadable or empty layer are one-line errors."""
    from benchmark.mapping.scene import GIS_HINT

    try:
        import pyogrio
        import shapely
    except ImportError:
        raise UserError(f"labels file {path} is a vector layer; reading it needs the gis extra: {GIS_HINT}") from None
    if not path.exists():
        raise UserError(f"labels file {path} does not exist")
    try:
        meta, _, geometry, fields = pyogrio.raw.read(path)
    except Exception as exc:  # pyogrio raises DataSourceError, DataLayerError, ...
        raise UserError(f"labels file {path} is not a vector layer GDAL can read ({type(exc).__name__})") from None
    columns = list(meta["fields"])
    if label_field not in columns:
        raise UserError(
            f"labels file {path} has no attribute {label_field!r}{closest(label_field, columns)}; its "
            f"attributes: {', '.join(columns) or 'none'} (name the label attribute with --label-field)"
        )
    labels = fields[columns.index(label_field)]
    shapes = shapely.from_wkb(geometry)
    if len(shapes) == 0:
        raise UserError(f"labels file {path} has no features")
    return shapes, labels, meta.get("crs")


def _to_pixels(path: Path, shapes, layer_crs, scene):
    """Geometries in scene pixel coordinates (x = column, y = row)."""
    import shapely

    crs_wkt = getattr(scene, "crs_wkt", None)
    geotransform = getattr(scene, "geotransform", None)
    if geotransform is None:
        if layer_crs:
            raise UserError(
                f"labels file {path} is in a CRS ({layer_crs}) but the scene is not georeferenced; "
                "give the labels in pixel coordinates (a layer without a CRS, or a CSV)"
            )
        return shapes
    if crs_wkt is not None:
        if not layer_crs:
            raise UserError(
                f"labels file {path} has no CRS; assign the scene's (e.g. ogr2ogr -a_srs) so its "
                "coordinates can be placed"
            )
        from pyproj import CRS, Transformer

        source, target = CRS.from_user_input(layer_crs), CRS.from_wkt(crs_wkt)
        if source != target:
            transformer = Transformer.from_crs(source, target, always_xy=True)
            shapes = shapely.transform(shapes, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
    from benchmark.mapping.scene import apply_geotransform

    return shapely.transform(shapes, lambda xy: apply_geotransform(geotransform, xy[:, 0], xy[:, 1], inverse=True))


def _covered_windows(shape, grid: WindowGrid, cells_x: np.ndarray, cells_y: np.ndarray) -> np.ndarray:
    """Indices of the windows whose cells the (pixel-coordinate) polygon covers by more than COVER_FRACTION."""
    import shapely

    minx, miny, maxx, maxy = shape.bounds
    c0, c1 = np.searchsorted(cells_x, [minx, maxx], side="right") - 1
    r0, r1 = np.searchsorted(cells_y, [miny, maxy], side="right") - 1
    c0, r0 = max(c0, 0), max(r0, 0)
    c1, r1 = min(c1, len(cells_x) - 2), min(r1, len(cells_y) - 2)
    if c1 < c0 or r1 < r0:
        return np.empty(0, np.int64)
    rows, cols = np.meshgrid(np.arange(r0, r1 + 1), np.arange(c0, c1 + 1), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    boxes = shapely.box(cells_x[cols], cells_y[rows], cells_x[cols + 1], cells_y[rows + 1])
    covered = shapely.area(shapely.intersection(boxes, shape)) > COVER_FRACTION * shapely.area(boxes)
    return rows[covered] * grid.shape[1] + cols[covered]


def _samples(path: Path, grid: WindowGrid, xs, ys, names, where, classes, min_per_class) -> Points:
    if not names:
        raise UserError(f"labels file {path} has no points")
    # labels a reader cannot tell apart (`Crater` and `crater`, a zero-width space) are refused, as in datasets
    check_class_names(f"labels file {path}", "labels", names)
    if classes:
        check_class_names("--classes", "names", classes)
        for ref, name in zip(where, names):
            if name not in classes:
                raise UserError(
                    f"{path} {ref}: unknown label {name!r}{closest(name, classes)}; "
                    f"--classes allows {', '.join(classes)}"
                )
        class_names = tuple(classes)
    else:
        class_names = tuple(sorted(set(names)))
    if len(class_names) < 2:
        raise UserError(
            f"labels file {path} has too few classes ({', '.join(class_names)}); a map needs "
            "labelled windows of at least 2 classes"
        )
    labels = np.asarray([class_names.index(n) for n in names], dtype=np.int64)
    windows = grid.index_of(xs, ys)
    # one sample per window; a window labelled twice differently is a contradiction
    first: dict[int, int] = {}
    for i, (w, lab) in enumerate(zip(windows, labels)):
        if w in first and labels[first[w]] != lab:
            j = first[w]
            raise UserError(
                f"{path}: {where[j]} ({xs[j]:g}, {ys[j]:g}) {class_names[labels[j]]!r} and {where[i]} "
                f"({xs[i]:g}, {ys[i]:g}) {class_names[lab]!r} fall in the same window; move one or use "
                "a smaller --stride"
            )
        first.setdefault(int(w), i)
    keep = np.asarray(sorted(first.values()))
    counts = np.bincount(labels[keep], minlength=len(class_names))
    if counts.min() < min_per_class:
        short = [f"{class_names[c]} ({counts[c]})" for c in range(len(class_names)) if counts[c] < min_per_class]
        raise UserError(
            f"labels file {path} has too few windows for {', '.join(short)}; every class needs at "
            f"least {min_per_class} (points in one window count once)"
        )
    return Points(np.asarray(xs)[keep], np.asarray(ys)[keep], labels[keep], class_names, windows[keep])


def write_points(path: str | Path, xy: np.ndarray, labels) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")  # csv's own default, as the file was written before
    writer.writerow(["x", "y", "label"])
    for (x, y), label in zip(np.asarray(xy), labels):
        writer.writerow([f"{x:g}", f"{y:g}", label])
    atomic_write_text(Path(path), buf.getvalue())
