"""`bench craters`: the scored mapping case, craters in a real CTX block (benchmark/mapping/craters.py).

run: draw K labelled windows per class and seed, map, score, append rows to OUT.csv and write OUT.md;
scene: write the stacked scene, craters.txt and POINTS files for `bench map`; score: score a `bench map` folder.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmark.cli import (add_common, add_source_option, add_task_options, default_data_dir, int_list, positive_int,
                           seed_list)
from common.files import atomic_write_text

# tasks.datasets.ctx_murray's WINDOW, STRIDE and (TRAIN_X, 0, 3 TILE, 3 TILE), written out so that `bench` starts
# without importing the datasets (tests/test_mapping.py checks they are equal)
GRID = (64, 32)
SCORED_PART = (1248, 0, 3744, 3744)

DEFAULT_METHODS = ["protonet", "linear-probe"]
# the scored case's own draws: two K, a few seeds (each is a whole map); its scene step writes one seed's points
SHOTS, SEEDS, SCENE_SEEDS = (5, 20), (0, 1, 2), (0,)


def add_parser(sub) -> None:
    p = sub.add_parser("craters", help="the scored mapping case: craters in a real CTX block",
                       description=__doc__.split("\n\n")[1])
    verbs = p.add_subparsers(dest="verb", required=True)

    def common(q, grid=True):
        if grid:
            q.add_argument("--window", type=positive_int("window"), default=GRID[0])
            q.add_argument("--stride", type=positive_int("stride"), default=GRID[1])
        add_common(q)

    run = verbs.add_parser("run", help="build samples, map, score; append rows to OUT.csv, write OUT.md")
    common(run)
    run.add_argument("--method", action="append", default=None, metavar="NAME[:key=value,...]",
                     help=f"repeatable (default: {', '.join(DEFAULT_METHODS)})")
    run.add_argument("--shots", type=int_list, default=list(SHOTS))
    run.add_argument("--seeds", type=seed_list, default=list(SEEDS))
    run.add_argument("--beta", type=float, default=1.0, help="the MRF's weight for the smoothed rows")
    run.add_argument("--method-seed", type=int, default=p.settings.seed, help="the methods' seed (pre-training, fitting)")
    add_task_options(run, "base task the methods pre-train on")
    add_source_option(run)
    run.add_argument("--work", default="/tmp/marsfsl-ctx-craters", help="scene PNG, POINTS files, example map")
    run.add_argument("--out", default=str(p.settings.reference / "ctx-craters"),
                     help="appends to OUT.csv, writes OUT.md")
    run.add_argument("--threads", type=positive_int("threads"), default=p.settings.threads,
                     help="threads that extract features side by side (default: all cores)")
    run.add_argument("--fresh", action="store_true",
                     help="recompute: this command's methods and shots move out of OUT.csv into OUT.set-aside.csv")
    run.add_argument("--reuse-stale", action="store_true",
                     help="take rows made by another git commit when everything else about them matches")
    run.add_argument("--example", action="store_true", help="write bench map's outputs for one map")
    run.add_argument("--quiet", action="store_true")
    run.set_defaults(handler=cmd_run)
    scene = verbs.add_parser("scene", help="write the stacked scene, craters.txt and POINTS files for bench map")
    common(scene)
    scene.add_argument("--out", required=True)
    scene.add_argument("--shots", type=int_list, default=list(SHOTS))
    scene.add_argument("--seeds", type=seed_list, default=list(SCENE_SEEDS))
    scene.set_defaults(handler=cmd_scene)
    score = verbs.add_parser("score", help="score a bench map output folder of the CTX scene")
    common(score, grid=False)
    score.add_argument("--map", required=True)
    score.add_argument("--figure", default=None, help="also draw hits, false alarms and misses into this PNG")
    score.add_argument("--crop", type=_crop, default=list(SCORED_PART),
                       help="x0,y0,x1,y1 of the part to draw (default: the scored two thirds)")
    score.add_argument("--size", type=positive_int("size"), default=1000, help="longest side of the figure in pixels")
    score.set_defaults(handler=cmd_score)


def _crop(text: str) -> list[int]:
    import argparse

    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or values[2] <= values[0] or values[3] <= values[1]:
        raise argparse.ArgumentTypeError(f"--crop must be x0,y0,x1,y1 with x1 > x0 and y1 > y0, got {text!r}")
    return values


def _data_dir(args) -> Path:
    return Path(args.data_dir or default_data_dir())


def cmd_scene(args) -> int:
    from benchmark.mapping.craters import draw_points, write_scene
    from benchmark.mapping.points import write_points
    from tasks.datasets.ctx_murray import load_ctx
    from tasks.windows import WindowGrid

    path = write_scene(_data_dir(args), Path(args.out))
    grid = WindowGrid(3744, 3744, args.window, args.stride)
    _, boxes = load_ctx(_data_dir(args))
    for k in args.shots:
        for seed in args.seeds:
            xy, labels = draw_points(grid, boxes, k, np.random.default_rng([seed, k]))
            write_points(Path(args.out) / f"points-k{k}-seed{seed}.csv", xy, labels)
    print(f"scene: {path}; POINTS files and craters.txt in {args.out}")
    return 0


def cmd_score(args) -> int:
    from benchmark.mapping.craters import outcome_figure, score_labels
    from tasks.datasets.ctx_murray import load_ctx
    from common.errors import UserError
    from tasks.windows import WindowGrid

    try:
        summary = json.loads((Path(args.map) / "summary.json").read_text())
        labels = np.load(Path(args.map) / "labels.npy")
    except (OSError, ValueError):
        raise UserError(f"{args.map} is not a bench map output folder (summary.json and labels.npy)") from None
    if summary["scene_size"] != [3744, 3744]:
        raise UserError(f"{args.map} maps a {summary['scene_size']} scene, not the 3744 x 3744 CTX block")
    grid = WindowGrid(summary["scene_size"][1], summary["scene_size"][0], summary["window"], summary["stride"])
    _, boxes = load_ctx(_data_dir(args))
    scores = score_labels(grid, boxes, labels, summary["classes"].index("crater"))
    print(json.dumps({"map": args.map, "smoothing": summary["smoothing"], **scores}, indent=2))
    if args.figure:
        scene, _ = load_ctx(_data_dir(args))
        outcome_figure(Path(args.figure), scene, grid, boxes, labels.ravel() == summary["classes"].index("crater"),
                       args.crop, args.size)
        print(f"figure: {args.figure}")
    return 0


def smoothed_scores(probabilities, grid, boxes, smoothings, progress):
    """(smoothing, strength, score_labels' scores) of one map under each smoothing."""
    from benchmark.mapping.craters import CLASSES, score_labels
    from benchmark.mapping.smoothing import smooth

    out = []
    for smoothing, strength in smoothings:
        labels_grid = smooth(probabilities, smoothing, strength if smoothing != "none" else None)
        scores = score_labels(grid, boxes, labels_grid, CLASSES.index("crater"))
        progress.log(f"  smoothing {smoothing}: P {scores['precision']:.3f} R {scores['recall']:.3f} "
                     f"F1 {scores['f1']:.3f} (strict F1 {scores['strict_f1']:.3f})")
        out.append((smoothing, strength, scores))
    return out


def write_table(path: Path, out_csv: Path, wanted: set[tuple], labels: list[str], meta: dict) -> None:
    """The markdown table of the rows whose key is in `wanted` (the file may hold other settings' rows too),
    methods in command-line order, then shots, smoothing (none before mrf) and seed; printed as well."""
    from benchmark.mapping.craters import CRATERS, markdown, summarize_craters
    from benchmark.results import read_results

    frame = read_results(out_csv, CRATERS)
    frame = frame[[tuple(str(v) for v in row) in wanted for row in frame[CRATERS.key].itertuples(index=False)]]
    rank = {"method": {label: i for i, label in enumerate(labels)}, "smoothing": {"none": 0, "mrf": 1}}
    frame = frame.sort_values(["method", "shots", "smoothing", "seed"],
                              key=lambda c: c.map(lambda v: rank[c.name].get(v, len(rank[c.name])))
                              if c.name in rank else c).reset_index(drop=True)
    atomic_write_text(path, markdown(frame, summarize_craters(frame), meta))
    print(path.read_text())


def out_stem(out: str) -> str:
    """OUT of `--out OUT` (rows in OUT.csv, the table in OUT.md): a user who names either file means OUT."""
    path = Path(out)
    return str(path.with_suffix("")) if path.suffix.lower() in (".csv", ".md") else out


def cmd_run(args) -> int:
    import torch

    from benchmark.console import RichProgressReporter
    from benchmark.mapping.craters import CLASSES, CRATERS, draw_points, regions, write_scene
    from benchmark.mapping.map import MapOptions, map_scene
    from benchmark.mapping.points import read_points, write_points
    from benchmark.mapping.scene import Scene
    from benchmark.results import append_rows, check_results_path, locked_if_present, read_results, \
        reusable_units, set_aside, set_aside_path
    from benchmark.runner import MethodSpec, git_commit, method_conditions
    from methods.backbones import backbone_name, check_backbone
    from methods.cache import Cache
    from methods.devices import resolve_device
    from methods.features import thread_policy
    from methods.registry import create_method
    from tasks.datasets.ctx_murray import load_ctx, scene_identity, tile_paths, window_truth
    from common.errors import UserError
    from tasks.registry import load_task
    from tasks.windows import WindowGrid

    if args.fresh and args.reuse_stale:
        raise UserError("--fresh and --reuse-stale exclude each other: --fresh recomputes the rows --reuse-stale "
                        "would keep")
    data_dir = _data_dir(args)
    device = resolve_device(args.device)
    check_backbone(args.backbone)
    specs = [MethodSpec.parse(m) for m in (args.method or DEFAULT_METHODS)]
    methods = [create_method(spec.name, **spec.options) for spec in specs]  # bad names and options: before any work
    args.out = out_stem(args.out)
    out_csv = Path(f"{args.out}.csv")
    try:
        out_csv.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {args.out}: its folder cannot be created ({exc.strerror})") from None
    check_results_path(out_csv, CRATERS)
    work = Path(args.work)
    scene_path = write_scene(data_dir, work)
    pixels, boxes = load_ctx(data_dir)
    scene = Scene(str(scene_path), pixels)
    grid = WindowGrid(scene.height, scene.width, args.window, args.stride)
    cache = Cache(args.cache_dir) if args.cache_dir else Cache()  # first: the digest cache follows it
    # a source must not hold the scene or its tiles (by file content)
    task = load_task(args.task, data_dir, source=args.source, keep_out=[*tile_paths(data_dir), scene_path],
                     image_size=args.image_size, source_disjoint=args.source_disjoint)
    task_name = (task.plain or task).name
    progress = RichProgressReporter(enabled=not args.quiet)
    crater, ambiguous = window_truth(grid, boxes)
    _, scored = regions(grid)
    smoothings = (("none", 0.0), ("mrf", float(args.beta)))
    # a row's key: what was asked (task, source, method, K, smoothing), what else determines it (as bench run's
    # rows: runner.method_conditions; and the scene, grid and methods' seed), and the draw's seed
    scene_id = scene_identity(data_dir)
    measurements, conditions = [], []
    for spec, cond in zip(specs, method_conditions(task, args.backbone, args.image_size, device, methods)):
        for k in args.shots:
            for smoothing, strength in smoothings:
                measurements.append({"task": task_name, "source": cond["source"], "method": spec.label, "shots": k,
                                     "smoothing": smoothing, "strength": strength})
                conditions.append({**{c: cond[c] for c in CRATERS.conditions if c in cond}, "scene": scene_id,
                                   "method_seed": args.method_seed, "window": grid.window, "stride": grid.stride})
    del methods
    source = measurements[0]["source"] if measurements else ""
    meta = {"window": grid.window, "stride": grid.stride, "windows": grid.n, "image_size": args.image_size,
            "task": task_name, "source": source, "backbone": backbone_name(args.backbone), "scored": int(scored.sum()),
            "positives": int((scored & crater).sum()), "ambiguous": int((scored & ambiguous).sum()),
            "negatives": int((scored & ~crater & ~ambiguous).sum()), "beta": args.beta,
            "n_seeds": len(args.seeds), "method_seed": args.method_seed, "csv": str(out_csv),
            "command": " ".join(["bench"] + sys.argv[1:])}
    if args.fresh:  # never delete results: the rows this command recomputes move aside
        moved = set_aside(out_csv, CRATERS, measurements)
        if moved:
            progress.log(f"--fresh: moved {moved} rows from {out_csv} to {set_aside_path(out_csv)}")
    commit = git_commit()
    with locked_if_present(out_csv):
        frame = read_results(out_csv, CRATERS)
    # before any work: rows of these measurements under other conditions, or (unless --reuse-stale) from other
    # code, are refused in one line, as bench run does (results.reusable_units)
    done = {}
    for m, c in zip(measurements, conditions):
        what = f"{m['method']} K={m['shots']} smoothing {m['smoothing']}"
        done[m["method"], m["shots"], m["smoothing"]] = reusable_units(frame, CRATERS, m, c, commit, out_csv, what,
                                                                       args.reuse_stale)
    key_of = {(m["method"], m["shots"], m["smoothing"]): {**m, **c} for m, c in zip(measurements, conditions)}

    def key(spec, k, seed, smoothing) -> tuple:
        values = {**key_of[spec.label, k, smoothing], "seed": seed}
        return tuple(str(values[c]) for c in CRATERS.key)

    with thread_policy(args.threads or torch.get_num_threads()):
        for spec in specs:
            for k in args.shots:
                for seed in args.seeds:
                    if all(seed in done[spec.label, k, s] for s, _ in smoothings):
                        continue
                    points_path = work / f"points-k{k}-seed{seed}.csv"
                    xy, labels = draw_points(grid, boxes, k, np.random.default_rng([seed, k]))
                    write_points(points_path, xy, labels)
                    points = read_points(points_path, grid, list(CLASSES))
                    example = args.example and (spec.label, k, seed) == (specs[-1].label, max(args.shots),
                                                                         args.seeds[0])
                    started = time.perf_counter()
                    # the draw seed picks the labelled windows; the method's own seed (pre-training, e.g. SDFT's
                    # step 1) stays fixed, so every draw adapts the same pre-trained model
                    out = work / f"map-{spec.label}-k{k}-seed{seed}" if example else None
                    result = map_scene(spec, task, scene, grid, points, cache, args.settings.replace(
                        seed=args.method_seed), MapOptions(out=out, preview=1200), progress)
                    seconds = time.perf_counter() - started
                    progress.log(f"{spec.label} K={k} seed {seed}: map in {seconds:.1f} s "
                                 f"({json.dumps(result.summary['timings'])})")
                    rows = [{**key_of[spec.label, k, smoothing], "seed": seed, **scores,
                             "map_seconds": round(seconds, 2),
                             "prepare_seconds": result.summary["timings"]["prepare_s"], "git_commit": commit}
                            for smoothing, strength, scores in smoothed_scores(result.probabilities, grid, boxes,
                                                                               smoothings, progress)]
                    append_rows(out_csv, rows, CRATERS)
    wanted = {key(spec, k, seed, s) for spec in specs for k in args.shots for seed in args.seeds for s, _ in smoothings}
    write_table(Path(f"{args.out}.md"), out_csv, wanted, [spec.label for spec in specs], meta)
    return 0
