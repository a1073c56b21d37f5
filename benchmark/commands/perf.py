"""`bench perf`: episode throughput against easyfsl, extraction against the raw forward pass, warm start, memory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from benchmark.cli import add_common, add_task_options, bounded_int, config_from, positive_int
from benchmark.perf_options import PerfOptions


def add_parser(sub) -> None:
    p = sub.add_parser("perf", help="measure throughput, warm start and memory (one table)")
    settings, own = p.settings, PerfOptions()
    add_task_options(p)
    p.add_argument(
        "--episodes",
        type=positive_int("episodes"),
        default=settings.episodes,
        help="5-way 5-shot 15-query episodes of the throughput rows",
    )
    p.add_argument("--extraction-images", type=positive_int("extraction-images"), default=own.extraction_images)
    p.add_argument("--warm-method", default=own.warm_method)
    p.add_argument(
        "--memory-method",
        action="append",
        default=None,
        help="methods of the measured full run (default: every built-in method)",
    )
    p.add_argument("--memory-shots", default=",".join(map(str, settings.shots)), help="shots of the measured full run")
    p.add_argument(
        "--memory-episodes",
        type=positive_int("memory-episodes"),
        default=own.memory_episodes,
        help="episodes per shots of the measured full run (memory peaks while a method prepares and "
        "in its first episode at the most shots; later episodes reuse that memory)",
    )
    p.add_argument(
        "--ray-method",
        default=None,
        help="method of the Ray-against-local row (default: sdft where its step 1 is cached, else "
        "sdft-no-step1, and no row where Ray is not installed; 'none' leaves the row out)",
    )
    p.add_argument("--ray-episodes", type=positive_int("ray-episodes"), default=own.ray_episodes)
    p.add_argument(
        "--step1-batches",
        type=positive_int("step1-batches"),
        default=own.step1_batches,
        help="batches of SDFT step 1 timed against a bare training loop",
    )
    p.add_argument(
        "--transductive-episodes",
        type=bounded_int("transductive-episodes", 0),
        default=own.transductive_episodes,
        help="episodes on which each transductive method is compared with easyfsl's implementation "
        "(0: none; easyfsl's TIM takes about a second an episode)",
    )
    p.add_argument(
        "--cold",
        action="store_true",
        help="measure only the main job on a fresh clone (`bench run --method sdft --method protonet "
        "--shots 5` with an empty cache, --episodes of them): its wall time and where it went",
    )
    add_common(p)
    p.set_defaults(handler=cmd_perf)


def ray_row(args, log) -> tuple[str | None, str | None]:
    """(the Ray row's method, why the row is left out or None): without Ray installed, a method named by
    --ray-method is a one-line error and the default row is left out with a note, before any work."""
    from benchmark.perf import ray_missing
    from common.errors import UserError

    ray_method, left_out = args.ray_method, None
    if ray_method != "none" and (left_out := ray_missing()):
        if ray_method is not None:
            raise UserError(f"--ray-method {ray_method}: {left_out}")
        ray_method = "none"
        log(f"no Ray row: {left_out}")
    return ray_method, left_out


def cmd_perf(args) -> int:
    from benchmark.console import RichProgressReporter
    from benchmark.perf import cold_job, run_perf

    log = RichProgressReporter(enabled=False).log
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="marsfsl-cold-") as work:
            figures = cold_job(args.task, Path(args.settings.data_dir), Path(work), args.episodes, log)
        return print_figures(figures, f"bench perf --cold on {args.task}: the main job on a fresh clone", None)
    ray_method, left_out = ray_row(args, log)
    options = config_from(PerfOptions, args, memory_methods=tuple(args.memory_method or ()), ray_method=ray_method)
    with tempfile.TemporaryDirectory(prefix="marsfsl-perf-") as work:
        figures = run_perf(args.settings, options, Path(work), log=log)
    return print_figures(
        figures,
        f"bench perf on {args.task}: {os.cpu_count()} cores; episodes 5-way 5-shot "
        f"15-query, {args.episodes} of them, on cached features",
        f"No Ray row: {left_out}" if left_out else None,
    )


def print_figures(figures, title: str, caption: str | None) -> int:
    from rich.console import Console
    from rich.table import Table

    from benchmark.console import stdout

    table = Table(title=title, caption=caption)
    for column in ("measure", "value", "against", "ratio", "check"):
        table.add_column(column, justify="right" if column in ("value", "ratio") else "left")
    for f in figures:
        table.add_row(f.what, f"{f.value:,.2f} {f.unit}", f.reference, f"{f.ratio:.2f}x" if f.ratio else "", f.note)
    (stdout if stdout.is_terminal else Console(width=180)).print(table)  # a file or pipe gets unwrapped rows
    return 0
