"""`bench map`: classify a whole scene with sliding windows from a few labelled windows (points or polygons)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmark.cli import (
    add_common,
    add_map_isolate,
    add_source_option,
    add_task_options,
    positive_int,
    sandbox_available,
)
from benchmark.mapping.options import MapOptions
from benchmark.mapping.smoothing import SMOOTHERS


def _float(name: str):
    def convert(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name} must be a number, got {text!r}") from None

    return convert


def add_parser(sub) -> None:
    p = sub.add_parser(
        "map",
        help="map a whole scene from a few labelled windows (sliding-window classification)",
        description="Cut the scene into windows, adapt the method on the labelled windows (a CSV "
        "of pixel points, or points/polygons of a GIS layer) as on an episode's "
        "support set, classify every window, optionally smooth, and write a label "
        "map, an overlay, per-window probabilities, georeferenced GeoTIFF and "
        "GeoPackage layers and a JSON summary (see docs/mapping.md).",
    )
    p.add_argument("--method", required=True, metavar="NAME[:key=value,...]")
    _add_input_options(p)
    _add_grid_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the outputs")
    p.add_argument(
        "--classes",
        default=None,
        help="comma-separated class names in legend order; labels outside "
        "it are an error (default: the labels found, sorted)",
    )
    _add_smoothing_options(p)
    add_task_options(p, "base task the method pre-trains on (its base pool); windows are resized to --image-size")
    add_source_option(p)
    p.add_argument("--seed", type=int, default=p.settings.seed, help="the method's seed (pre-training, fitting)")
    _add_run_options(p)
    add_common(p)
    p.set_defaults(handler=cmd_map)


def _add_input_options(p) -> None:
    """The scene and its labelled samples."""
    p.add_argument(
        "--scene",
        required=True,
        metavar="IMAGE",
        help="the scene: PNG/JPEG, or GeoTIFF, JPEG2000 and anything GDAL reads (the gis extra; read "
        "window by window); greyscale or RGB, 8-bit, 16-bit or float",
    )
    p.add_argument(
        "--labels",
        required=True,
        metavar="POINTS",
        help="labelled samples: a CSV with columns x,y,label (scene pixels), or a GeoPackage/GeoJSON/"
        "shapefile of points (the window whose cell contains each) or polygons (every window whose "
        "cell they cover by more than half), in any CRS",
    )
    p.add_argument(
        "--label-field",
        default="label",
        metavar="NAME",
        help="the attribute of a GIS labels layer that holds the class names (default: label)",
    )


def _add_grid_options(p) -> None:
    """The sliding windows' size and step."""
    p.add_argument("--window", required=True, type=positive_int("window"), help="window side in scene pixels")
    p.add_argument("--stride", type=positive_int("stride"), default=None, help="window step, px (default: window / 2)")


def _add_smoothing_options(p) -> None:
    """Smoothing of the class-probability map."""
    p.add_argument(
        "--smooth",
        choices=SMOOTHERS,
        default=MapOptions.smoothing,
        help="smoothing of the class-probability map over neighbouring windows",
    )
    p.add_argument(
        "--smooth-strength",
        type=_float("smooth-strength"),
        default=None,
        help="mrf: Potts weight per disagreeing neighbour (default 1); majority: radius in windows (default 1)",
    )


def _add_run_options(p) -> None:
    """Figure size, feature-extraction threads and progress output."""
    p.add_argument("--preview", type=positive_int("preview"), default=MapOptions.preview, help="PNG size: longest side")
    p.add_argument(
        "--threads",
        type=positive_int("threads"),
        default=p.settings.threads,
        help="threads that extract features side by side (default: all cores)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_map_isolate(p)


def cmd_map(args) -> int:
    from benchmark.console import RichProgressReporter, console
    from benchmark.mapping.map import classified_windows, map_scene
    from benchmark.mapping.points import read_points
    from benchmark.mapping.scene import load_scene
    from benchmark.runner import MethodSpec
    from benchmark.session import session
    from methods.backbones import check_backbone
    from methods.cache import Cache
    from methods.registry import method_info
    from tasks.windows import WindowGrid

    started = time.perf_counter()
    settings = args.settings
    check_backbone(settings.backbone)
    spec = MethodSpec.parse(args.method)
    method_info(spec.name)  # an unknown method fails before any work
    sandbox_available(args)
    scene = load_scene(args.scene)
    grid = WindowGrid(scene.height, scene.width, args.window, args.stride or max(1, args.window // 2))
    points = read_points(args.labels, grid, legend(args.classes), scene=scene, label_field=args.label_field)
    classified = classified_windows(scene, grid, points)
    progress = RichProgressReporter(enabled=not args.quiet)
    with session(settings):  # the digests of the task's files in the run's cache folder; the thread policy
        task = base_task(args, settings)
        describe(progress, scene, grid, points)
        options = MapOptions(args.smooth, args.smooth_strength, Path(args.out), args.preview)
        result = map_scene(
            spec,
            task,
            scene,
            grid,
            points,
            Cache(settings.cache_dir),
            settings,
            options,
            progress,
            classified=classified,
            hidden=hidden_folders(args, settings),
        )
    fractions = ", ".join(f"{k} {100 * v:.1f}%" for k, v in result.summary["area_fraction"].items())
    unclassified = result.summary["unclassified_windows"]
    if unclassified:
        fractions += f" ({unclassified} mostly no-data windows without a class)"
    console.print(
        f"map: {args.out}/overlay.png  areas: {fractions}  ({time.perf_counter() - started:.1f} s)", highlight=False
    )
    return 0


def hidden_folders(args, settings):
    """With --isolate, the folders the method's sandbox must never show (benchmark/mapping/isolated.py): the
    data, the scene's and the labels' folders, the outputs and the cache; None: the method runs here."""
    if not args.isolate:
        return None
    from benchmark.mapping.isolated import hidden_folders

    scene, labels = (Path(p).resolve().parent if Path(p).exists() else None for p in (args.scene, args.labels))
    return hidden_folders(settings.data_dir, scene, labels, args.out, settings.cache_dir)


def legend(text: str | None) -> list[str] | None:
    """--classes as a list (None: the labels found, sorted); a class named twice is a one-line error."""
    from common.errors import UserError

    classes = [c.strip() for c in text.split(",") if c.strip()] if text else None
    if classes is not None and len(set(classes)) != len(classes):
        raise UserError(f"--classes names a class twice: {text}")
    return classes


def base_task(args, settings):
    """The task the method pre-trains on; a source must not hold the scene itself (by file content; a scene
    GDAL reads from elsewhere cannot be checked)."""
    from tasks.registry import load_task

    return load_task(
        settings.task,
        settings.data_dir,
        source=args.source,
        keep_out=[args.scene] if Path(args.scene).is_file() else [],
        image_size=settings.image_size,
        source_disjoint=args.source_disjoint,
    )


def describe(progress, scene, grid, points) -> None:
    progress.log(
        f"scene {scene.width} x {scene.height}: {grid.shape[1]} x {grid.shape[0]} = {grid.n} windows of "
        f"{grid.window} px every {grid.stride} px; {len(points.labels)} labelled windows, classes "
        f"{', '.join(points.class_names)}"
    )
    if scene.geotransform is None:
        progress.log("the scene is not georeferenced: the GIS outputs are in pixel coordinates (x = column, y = row)")
    elif scene.crs_wkt is None:
        progress.log("the scene has a geotransform but no CRS: the GIS outputs have its coordinates and no CRS")
