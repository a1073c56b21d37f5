"""A map of a whole scene: prepare the method on the base task, fit it on the labelled windows, classify
every window with enough valid pixels, smooth, and write the figures, arrays, GIS layers and summary."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.mapping import gis
from benchmark.mapping.context import SceneWindows
from benchmark.mapping.options import MapOptions
from benchmark.mapping.points import Points
from benchmark.mapping.render import area_fractions, class_colours, render_maps, write_summary
from benchmark.mapping.scene import GIS_HINT, MIN_VALID_FRACTION
from benchmark.mapping.smoothing import DEFAULT_STRENGTH, argmax_labels, smooth
from benchmark.provenance import source_id
from benchmark.runner import method_cache
from benchmark.scoring import check_scores
from common.errors import UserError
from common.files import atomic_output
from common.settings import Settings
from methods.backbones import backbone_name, weights_digest
from methods.base import Context, handed
from methods.devices import resolve_device
from methods.progress import SILENT, Progress
from tasks.handles import RowHandles
from tasks.windows import WindowGrid


def softmax(scores: np.ndarray) -> np.ndarray:
    z = scores.astype(np.float64) - scores.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def classify_windows(
    method,
    windows: SceneWindows,
    points: Points,
    rng: np.random.Generator,
    chunk: int = 2048,
    progress: Progress = SILENT,
    classified: np.ndarray | None = None,
    what: str = "",
) -> tuple[np.ndarray, dict]:
    """Fit the (prepared) method on the labelled windows, predict the `classified` windows (default: all) in
    chunks (a transductive method: all in one, the scene's windows being its query), naming each window by its
    handle (`windows`, the harness's side, knows which window each is). `what` names the method in a score
    error ("method protonet").

    Returns (probabilities (ny, nx, C) float32 = softmax of the method's scores, NaN for windows not
    classified; timings)."""
    n_way = len(points.class_names)
    targets = np.arange(windows.grid.n) if classified is None else np.flatnonzero(classified)
    if getattr(method, "transductive", False):  # its query is the scene: every classified window at once
        chunk = max(len(targets), 1)
    started = time.perf_counter()
    method.fit(windows.window_indices(points.windows), points.labels.copy(), n_way, rng)  # the method's own copy
    fitted = time.perf_counter()
    probs = np.full((windows.grid.n, n_way), np.nan, np.float32)
    handles = windows.window_indices(targets)
    targets = targets[np.argsort(handles, kind="stable")]  # asked in handle order: positions say nothing
    with progress.bar(f"classifying {len(targets)} windows", len(targets)) as advance:
        for start in range(0, len(targets), chunk):
            batch = targets[start : start + chunk]
            scores = check_scores(
                method.predict(windows.window_indices(batch)), (len(batch), n_way), what, "windows x classes"
            )
            probs[batch] = softmax(scores)
            advance(len(batch))
    shape = (*windows.grid.shape, n_way)
    return probs.reshape(shape), {"fit_s": fitted - started, "predict_s": time.perf_counter() - fitted}


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
) -> MapResult:
    """Prepare the method on the base task (with `settings`' backbone, image size, seed and device), fit it on
    the labelled windows, classify every window with at least MIN_VALID_FRACTION valid pixels, smooth, and
    (with `options.out`; options None: MapOptions()) write label_map.png, overlay.png, probabilities.npy,
    labels.npy, the GIS layers (gis.FILES, with the gis extra) and summary.json."""
    from methods.registry import create_method

    options = options or MapOptions()
    smooth(np.full((1, 1, 2), 0.5, np.float32), options.smoothing, options.strength)  # bad smoothing: before work
    if classified is None:
        classified = classified_windows(scene, grid, points)
    method = create_method(method_spec.name, **method_spec.options)
    windows = scene_windows(task, scene, grid, cache, settings, progress)
    ctx = map_context(method, task, windows, cache, settings)
    started = time.perf_counter()
    method.prepare(ctx)
    timings = {"prepare_s": time.perf_counter() - started}
    progress.log(f"{method_spec.label}: prepared (base task and {grid.n} windows) in {timings['prepare_s']:.1f} s")
    probs, t = classify_windows(
        method,
        windows,
        points,
        np.random.default_rng([settings.seed, 7919]),
        options.chunk,
        progress,
        None if classified.all() else classified,
        f"method {method_spec.label}",
    )
    timings.update(t)
    t0 = time.perf_counter()
    labels = smooth(probs, options.smoothing, options.strength)
    timings["smooth_s"] = time.perf_counter() - t0
    # what summary.json says of the map (its timings and files follow)
    summary = {
        **scene_keys(scene, grid),
        **method_keys(method_spec, method, task, settings),
        **grid_keys(grid, classified),
        **class_keys(points, options, grid, probs, labels),
    }
    result = MapResult(probs, labels, summary)
    if options.out is not None:
        timings.update(write_outputs(Path(options.out), result, scene, grid, points, options, progress))
    timings["total_s"] = time.perf_counter() - started
    summary["timings"] = {k: round(v, 3) for k, v in timings.items()}
    if options.out is not None:
        write_summary(Path(options.out) / "summary.json", summary)
    return result


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


def map_context(method, task, windows: SceneWindows, cache, settings: Settings) -> Context:
    """What `method` prepares on: a plain Context of the base task's rows (handed as for `bench run`, with
    `settings`' backbone, image size, seed and device) followed by the scene's windows in handle order, holding
    what the method consumes and nothing of where a window lies."""
    given = handed(
        task,
        cache,
        windows.backbone,
        windows.image_size,
        type(method).consumes,
        windows.progress,
        windows.device,
        RowHandles.identity(len(task.table)),
    )  # base rows: labelled, their numbers say nothing of windows
    return Context.of(
        windows.handed(given),
        method_cache(cache, method),
        backbone=windows.backbone,
        image_size=windows.image_size,
        seed=settings.seed,
        progress=windows.progress,
        device=windows.device,
    )


def scene_keys(scene, grid: WindowGrid) -> dict:
    return {
        "scene": scene.path,
        "scene_size": [grid.width, grid.height],
        "scene_fingerprint": scene.fingerprint(),
        **georeferencing(scene),
    }


def method_keys(method_spec, method, task, settings: Settings) -> dict:
    return {
        "method": method_spec.label,
        "method_config": method.config(),
        "task": task.name,
        "source": source_id(task) or None,
        "backbone": backbone_name(settings.backbone),
        "weights": weights_digest(settings.backbone),
        "transductive": bool(getattr(method, "transductive", False)),
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
