"""`bench tune`: a method's options on a grid, run on validation episodes; the table and the chosen setting."""

from __future__ import annotations

import time
from pathlib import Path

from benchmark.cli import (
    add_common,
    add_episode_shape,
    add_reuse_stale,
    add_task_options,
    config_from,
    default_data_dir,
    file_path,
    positive_int,
)


def add_parser(sub) -> None:
    p = sub.add_parser("tune", help="choose a method's options on validation episodes (never target ones)")
    p.add_argument(
        "--method", required=True, metavar="NAME[:key=value,...]", help="the method, with any options held fixed"
    )
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="an option and the values to try (repeat for several; every combination is run)",
    )
    add_task_options(p, "task whose validation slice (part of its base pool) the episodes come from")
    settings = p.settings
    p.add_argument("--shots", type=positive_int("shots"), default=settings.tune_shots, help="labelled images per class")
    add_episode_shape(p, settings.tune_episodes, fewest=2)
    p.add_argument(
        "--out",
        type=file_path("out"),
        default=None,
        help=f"validation results CSV (default: {settings.runs}/<task>-validation.csv)",
    )
    p.add_argument(
        "--table",
        type=file_path("table"),
        default=None,
        help=f"tuning table CSV (default: {settings.runs}/<task>-tune-<method>-<K>shot.csv)",
    )
    add_reuse_stale(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_common(p)
    p.set_defaults(handler=cmd_tune)


def cmd_tune(args) -> int:
    from rich.table import Table

    from benchmark.console import RichProgressReporter, console, stdout
    from benchmark.tuning import CHOICE_RULE, VERDICT_COLUMNS, TuneConfig, option_string, table_lines, tune
    from methods.backbones import check_backbone

    check_backbone(args.backbone)
    config = config_from(
        TuneConfig,
        args,
        grids=args.grid,
        data_dir=Path(args.data_dir or default_data_dir()),
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        out=Path(args.out) if args.out else None,
        table=Path(args.table) if args.table else None,
    )
    started = time.perf_counter()
    tuned = tune(config, RichProgressReporter(enabled=not args.quiet))
    axes = [k for k in tuned.table.columns if k not in ("method", *VERDICT_COLUMNS)]
    table = Table(
        title=f"{args.task}@validation: {args.ways}-way {args.shots}-shot, {args.method} "
        f"(mean ± 95% CI over episodes; difference paired with the best)"
    )
    for column in ("setting", "accuracy %", "episodes", "vs best %", "paired", "macro-F1 %", ""):
        table.add_column(column, justify="left" if column in ("setting", "") else "right", no_wrap=column != "setting")
    for line in table_lines(tuned.table, axes):
        table.add_row(*line)
    stdout.print(table)
    stdout.print(f"rule: {CHOICE_RULE}", highlight=False)
    stdout.print(f"chosen: {option_string(tuned.chosen)}", highlight=False)
    console.print(
        f"table: {config.table_path()}; rows: {tuned.results}  ({time.perf_counter() - started:.1f} s)", highlight=False
    )
    return 0
