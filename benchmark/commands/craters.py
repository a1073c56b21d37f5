"""`bench craters`: the scored mapping case, craters in a real CTX block (benchmark/mapping/craters.py).

run: draw K labelled windows per class and seed, map, score, append rows to OUT.csv and write OUT.md;
scene: write the stacked scene, craters.txt and POINTS files for `bench map`; score: score a `bench map` folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmark.cli import (
    add_common,
    add_fail_fast,
    add_map_isolate,
    add_reuse_stale,
    add_source_option,
    add_task_options,
    config_from,
    default_data_dir,
    int_list,
    positive_int,
    refuse_fresh_with_reuse_stale,
    sandbox_available,
    seed_list,
)
from common.files import atomic_write_text

# tasks.datasets.ctx_murray's WINDOW, STRIDE and (TRAIN_X, 0, 3 TILE, 3 TILE), written out so that `bench` starts
# without importing the datasets (tests/test_mapping.py checks they are equal)
GRID = (64, 32)
SCORED_PART = (1248, 0, 3744, 3744)

DEFAULT_METHODS = ["protonet", "linear-probe"]
# the scored case's own draws: two K, a few seeds (each is a whole map); its scene step writes one seed's points
SHOTS, SEEDS, SCENE_SEEDS = (5, 20), (0, 1, 2), (0,)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "craters", help="the scored mapping case: craters in a real CTX block", description=__doc__.split("\n\n")[1]
    )
    verbs = p.add_subparsers(dest="verb", required=True)
    _add_run_parser(verbs, p.settings)
    _add_scene_parser(verbs)
    _add_score_parser(verbs)


def _add_common(q, grid=True) -> None:
    """The options every verb shares: the window grid (not for score, which reads it from the map) and bench's."""
    if grid:
        q.add_argument("--window", type=positive_int("window"), default=GRID[0])
        q.add_argument("--stride", type=positive_int("stride"), default=GRID[1])
    add_common(q)


def _add_run_parser(verbs, settings) -> None:
    run = verbs.add_parser("run", help="build samples, map, score; append rows to OUT.csv, write OUT.md")
    _add_common(run)
    run.add_argument(
        "--method",
        action="append",
        default=None,
        metavar="NAME[:key=value,...]",
        help=f"repeatable (default: {', '.join(DEFAULT_METHODS)})",
    )
    run.add_argument("--shots", type=int_list, default=list(SHOTS))
    run.add_argument("--seeds", type=seed_list, default=list(SEEDS))
    run.add_argument("--beta", type=float, default=1.0, help="the MRF's weight for the smoothed rows")
    run.add_argument("--method-seed", type=int, default=settings.seed, help="the methods' seed (pre-training, fitting)")
    add_task_options(run, "base task the methods pre-train on")
    add_source_option(run)
    run.add_argument("--work", default="/tmp/marsfsl-ctx-craters", help="scene PNG, POINTS files, example map")
    run.add_argument("--out", default=str(settings.reference / "ctx-craters"), help="appends to OUT.csv, writes OUT.md")
    run.add_argument(
        "--threads",
        type=positive_int("threads"),
        default=settings.threads,
        help="threads that extract features side by side (default: all cores)",
    )
    _add_rows_options(run)
    add_map_isolate(run)
    run.add_argument("--example", action="store_true", help="write bench map's outputs for one map")
    run.add_argument("--quiet", action="store_true")
    run.set_defaults(handler=cmd_run)


def _add_rows_options(run) -> None:
    """What run does with the rows OUT.csv already holds."""
    run.add_argument(
        "--fresh",
        action="store_true",
        help="recompute: this command's methods and shots move out of OUT.csv into OUT.set-aside.csv",
    )
    add_reuse_stale(run)
    add_fail_fast(run)


def _add_scene_parser(verbs) -> None:
    scene = verbs.add_parser("scene", help="write the stacked scene, craters.txt and POINTS files for bench map")
    _add_common(scene)
    scene.add_argument("--out", required=True)
    scene.add_argument("--shots", type=int_list, default=list(SHOTS))
    scene.add_argument("--seeds", type=seed_list, default=list(SCENE_SEEDS))
    scene.set_defaults(handler=cmd_scene)


def _add_score_parser(verbs) -> None:
    score = verbs.add_parser("score", help="score a bench map output folder of the CTX scene")
    _add_common(score, grid=False)
    score.add_argument("--map", required=True)
    score.add_argument("--figure", default=None, help="also draw hits, false alarms and misses into this PNG")
    score.add_argument(
        "--crop",
        type=_crop,
        default=list(SCORED_PART),
        help="x0,y0,x1,y1 of the part to draw (default: the scored two thirds)",
    )
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
    from common.errors import UserError
    from tasks.datasets.ctx_murray import load_ctx
    from tasks.windows import WindowGrid

    try:
        summary = json.loads((Path(args.map) / "summary.json").read_text())
        labels = np.load(Path(args.map) / "labels.npy")
    except (OSError, ValueError):
        raise UserError(f"{args.map} is not a bench map output folder (summary.json and labels.npy)") from None
    if summary["scene_size"] != [3744, 3744]:
        raise UserError(f"{args.map} maps a {summary['scene_size']} scene, not the 3744 x 3744 CTX block")
    grid = WindowGrid(summary["scene_size"][1], summary["scene_size"][0], summary["window"], summary["stride"])
    scene, boxes = load_ctx(_data_dir(args))  # one read of the nine tiles, for the scores and the figure
    scores = score_labels(grid, boxes, labels, summary["classes"].index("crater"))
    print(json.dumps({"map": args.map, "smoothing": summary["smoothing"], **scores}, indent=2))
    if args.figure:
        outcome_figure(
            Path(args.figure),
            scene,
            grid,
            boxes,
            labels.ravel() == summary["classes"].index("crater"),
            args.crop,
            args.size,
        )
        print(f"figure: {args.figure}")
    return 0


def write_table(path: Path, frame, labels: list[str], meta: dict) -> None:
    """The markdown table of this run's rows (`frame`: the file may hold other settings' rows too), methods in
    command-line order, then shots, smoothing (none before mrf) and seed; printed as well."""
    from benchmark.mapping.craters import markdown, summarize_craters

    rank = {"method": {label: i for i, label in enumerate(labels)}, "smoothing": {"none": 0, "mrf": 1}}
    frame = frame.sort_values(
        ["method", "shots", "smoothing", "seed"],
        key=lambda c: c.map(lambda v: rank[c.name].get(v, len(rank[c.name]))) if c.name in rank else c,
    ).reset_index(drop=True)
    atomic_write_text(path, markdown(frame, summarize_craters(frame), meta))
    print(path.read_text())


def out_stem(out: str) -> str:
    """OUT of `--out OUT` (rows in OUT.csv, the table in OUT.md): a user who names either file means OUT."""
    path = Path(out)
    return str(path.with_suffix("")) if path.suffix.lower() in (".csv", ".md") else out


def cmd_run(args) -> int:
    import time

    import torch

    from benchmark.console import RichProgressReporter, finish
    from benchmark.pipeline import run
    from benchmark.protocols.craters import Craters, CratersConfig
    from benchmark.runner import MethodSpec
    from methods.backbones import check_backbone
    from methods.devices import resolve_device
    from methods.features import thread_policy

    refuse_fresh_with_reuse_stale(args)
    sandbox_available(args)
    device = resolve_device(args.device)
    check_backbone(args.backbone)
    config = config_from(
        CratersConfig,
        args,
        methods=[MethodSpec.parse(m) for m in (args.method or DEFAULT_METHODS)],
        data_dir=_data_dir(args),
        out=out_stem(args.out),
        device=device,
        work=Path(args.work),
        stop_on_failure=args.fail_fast or args.debug,
    )
    protocol, started, failures = Craters(config), time.perf_counter(), []
    with thread_policy(args.threads or torch.get_num_threads()):
        # bench run's failure policy: a failing method is reported at the end, the others still map
        rows = run(protocol, RichProgressReporter(enabled=not args.quiet), failures)
    if len(rows):
        write_table(Path(f"{config.out}.md"), rows, [spec.label for spec in config.methods], protocol.meta())
    return finish(config.results_path(), started, failures)
