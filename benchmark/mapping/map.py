"""A map of a whole scene: prepare the method on the base task, fit it on the labelled windows, classify
every window with enough valid pixels, smooth, and write the figures, arrays, GIS layers and summary."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.mapping import gis
from benchmark.mapping.answers import (  # noqa: F401  (classify_windows, map_context: where callers find them)
    answered_here,
    checked_here,
    classify_windows,
    map_context,
)
from benchmark.mapping.context import SceneWindows
from benchmark.mapping.options import MapOptions
from benchmark.mapping.points import Points
from benchmark.mapping.render import area_fractions, class_colours, render_maps, write_summary
from benchmark.mapping.scene import GIS_HINT, MIN_VALID_FRACTION
from benchmark.mapping.smoothing import DEFAULT_STRENGTH, argmax_labels, smooth
from benchmark.provenance import source_id
from common.errors import UserError
from common.files import atomic_output, replaced_outputs
from common.settings import Settings
from methods.backbones import backbone_name, weights_digest
from methods.devices import resolve_device
from methods.progress import SILENT, Progress
from tasks.windows import WindowGrid


def classified_windows(scene, grid: WindowGrid, points: Points) -> np.ndarray:
    """(n_windows,) bool: windows with at least MIN_VALID_FRACTION valid pixels; a labelled window below it is
    a UserError."""
    classified = scene.valid_fractions(grid) >= MIN_VALID_FRACTION
    unusable = points.windows[~classified[points.windows]]
    if len(unusable):
        x, y = grid.centres()[unusable[0]]
        raise UserError(
            f"a labelled window (centre at pixel {x:g}, {y:g}) is mostly no-data in {scene.path}; "
            "label windows of valid pixels"
        )
    return classified


def georeferencing(scene) -> dict:
    """What summary.json says about the map's coordinates."""
    georeferenced = scene.geotransform is not None
    return {
        "georeferenced": georeferenced,
        "crs": scene.crs_wkt,
        "geotransform": list(scene.geotransform) if georeferenced else None,
        "coordinates": (
            "map coordinates in the scene's CRS"
            if scene.crs_wkt
            else "map coordinates of the scene's geotransform (no CRS)"
        )
        if georeferenced
        else "pixel coordinates (x = column, y = row): the scene is not georeferenced",
    }


@dataclass
class MapResult:
    probabilities: np.ndarray  # (ny, nx, C) raw, softmax of the method's scores; NaN: no class
    labels: np.ndarray  # (ny, nx) after smoothing; -1: no class
    summary: dict


def map_scene(
    method_spec,
    task,
    scene,
    grid: WindowGrid,
    points: Points,
    cache,
    settings: Settings,
    options: MapOptions | None = None,
    progress: Progress = SILENT,
    classified: np.ndarray | None = None,
    hidden: tuple[Path, ...] | None = None,
) -> MapResult:
    """Prepare the method on the base task (with `settings`' backbone, image size, seed and device), fit it on
    the labelled windows, classify every window with at least MIN_VALID_FRACTION valid pixels, smooth, and
    (with `options.out`; options None: MapOptions()) write label_map.png, overlay.png, probabilities.npy,
    labels.npy, the GIS layers (gis.FILES, with the gis extra) and summary.json. `hidden` None: the method runs
    in this process; else (`--isolate`) in a bubblewrap sandbox (benchmark/mapping/isolated.py), which holds
    none of the folders of this machine and none of `hidden` (the data, scene, labels, output and cache)."""
    options = options or MapOptions()
    smooth(np.full((1, 1, 2), 0.5, np.float32), options.smoothing, options.strength)  # bad smoothing: before work
    if classified is None:
        classified = classified_windows(scene, grid, points)
    windows = scene_windows(task, scene, grid, cache, settings, progress)
    started = time.perf_counter()
    if hidden is None:
        method, probs, timings = answered_here(method_spec, task, windows, points, cache, settings, options, classified)
        if options.check:
            checked_here(method_spec, method, task, windows, points, cache, settings, options, (probs, classified))
    else:
        from benchmark.mapping.isolated import answered_in_sandbox

        method, probs, timings = answered_in_sandbox(
            method_spec, task, windows, points, cache, settings, options, classified, hidden
        )
    t0 = time.perf_counter()
    labels = smooth(probs, options.smoothing, options.strength)
    timings["smooth_s"] = time.perf_counter() - t0
    # what summary.json says of the map (its timings and files follow)
    summary = {
        **scene_keys(scene, grid),
        **method_keys(method_spec, method, task, settings, hidden is not None),
        **grid_keys(grid, classified),
        **class_keys(points, options, grid, probs, labels),
    }
    result = MapResult(probs, labels, summary)
    if options.out is None:
        timings["total_s"] = time.perf_counter() - started
        summary["timings"] = {k: round(v, 3) for k, v in timings.items()}
        return result
    out = Path(options.out)
    # written aside and moved in together: a map that fails while writing leaves the earlier map's outputs
    try:
        with replaced_outputs(out, "summary.json", previous_outputs(out)) as stage:
            timings.update(write_outputs(stage, result, scene, grid, points, options, progress))
            timings["total_s"] = time.perf_counter() - started
            summary["timings"] = {k: round(v, 3) for k, v in timings.items()}
            write_summary(stage / "summary.json", summary)
    except OSError as exc:
        raise UserError(
            f"cannot write the map into {out} ({exc.strerror or exc}); nothing in it was changed: free some space "
            "or pass another --out"
        ) from None
    return result


def previous_outputs(out: Path) -> list[str]:
    """The files an earlier map's summary.json in `out` lists (none if it has none, or it cannot be read)."""
    try:
        files = json.loads((out / "summary.json").read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []


def scene_windows(
    task, scene, grid: WindowGrid, cache, settings: Settings, progress: Progress = SILENT
) -> SceneWindows:
    """The harness's side of mapping `scene` after `task`'s rows, with `settings`' backbone, image size and
    device; windows' features and pixels go to `cache`."""
    return SceneWindows(
        scene,
        grid,
        len(task.table),
        cache,
        settings.backbone,
        settings.image_size,
        resolve_device(settings.device),
        progress,
    )


def scene_keys(scene, grid: WindowGrid) -> dict:
    return {
        "scene": scene.path,
        "scene_size": [grid.width, grid.height],
        "scene_fingerprint": scene.fingerprint(),
        **georeferencing(scene),
    }


def method_keys(method_spec, method, task, settings: Settings, isolated: bool = False) -> dict:
    return {
        "method": method_spec.label,
        "method_config": method.config(),
        "task": task.name,
        "source": source_id(task) or None,
        "backbone": backbone_name(settings.backbone),
        "weights": weights_digest(settings.backbone),
        "transductive": bool(getattr(method, "transductive", False)),
        "isolated": bool(isolated),
        "image_size": settings.image_size,
        "seed": settings.seed,
    }


def grid_keys(grid: WindowGrid, classified: np.ndarray) -> dict:
    return {
        "window": grid.window,
        "stride": grid.stride,
        "grid_shape": list(grid.shape),
        "windows": grid.n,
        "window_x0": grid.xs,
        "window_y0": grid.ys,
        "unclassified_windows": int((~classified).sum()),
        "min_valid_fraction": MIN_VALID_FRACTION,
    }


def class_keys(points: Points, options: MapOptions, grid: WindowGrid, probs: np.ndarray, labels: np.ndarray) -> dict:
    names = points.class_names
    fractions = area_fractions(grid, labels, len(names))
    raw = argmax_labels(probs)
    return {
        "classes": list(names),
        "labelled_windows": {name: int((points.labels == c).sum()) for c, name in enumerate(names)},
        "smoothing": options.smoothing,
        "smoothing_strength": DEFAULT_STRENGTH[options.smoothing]
        if options.strength is None
        else float(options.strength),
        "area_fraction": {name: float(fractions[c]) for c, name in enumerate(names)},
        "window_fraction_raw": {name: float((raw == c).mean()) for c, name in enumerate(names)},
    }


def write_outputs(
    out: Path, result: MapResult, scene, grid: WindowGrid, points: Points, options: MapOptions, progress: Progress
) -> dict:
    """The arrays, figures and (with the gis extra) GIS layers of a map into `out`, their names into its
    summary["files"]; returns the time they took."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    probs, labels, summary = result.probabilities, result.labels, result.summary
    for name, array in (("probabilities.npy", probs), ("labels.npy", labels.astype(np.int16))):
        with atomic_output(out / name) as tmp:
            np.save(tmp, array)
    n_classes = len(points.class_names)
    # the fractions summary.json already holds (class_keys): float64 both ways, so the same numbers
    fractions = np.array([summary["area_fraction"][name] for name in points.class_names])
    title = f"{summary['method']}, window {grid.window} stride {grid.stride}, smoothing {options.smoothing}"
    files = render_maps(out, scene, grid, labels, points.class_names, fractions, points, options.preview, title=title)
    timings = {"write_s": time.perf_counter() - t0}
    if gis.available():
        t0 = time.perf_counter()
        files += gis.write_gis(out, scene, grid, labels, probs, points.class_names, class_colours(n_classes))
        timings["write_gis_s"] = time.perf_counter() - t0
    else:
        summary["gis_outputs"] = f"not written: GeoTIFF and GeoPackage outputs need the gis extra: {GIS_HINT}"
        progress.log(summary["gis_outputs"])
    summary["files"] = files + ["probabilities.npy", "labels.npy", "summary.json"]
    return timings
