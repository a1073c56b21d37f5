"""`bench perf`: episode throughput against easyfsl, extraction against the raw forward pass, warm start, memory."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from benchmark.cli import DEFAULTS, add_common, add_task_options, default_data_dir, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("perf", help="measure throughput, warm start and memory (one table)")
    add_task_options(p)
    p.add_argument("--episodes", type=positive_int("episodes"), default=DEFAULTS.episodes)
    p.add_argument("--extraction-images", type=positive_int("extraction-images"), default=512)
    p.add_argument("--warm-method", default="sdft")
    p.add_argument("--memory-method", action="append", default=None,
                   help="methods of the measured full run (default: every built-in method)")
    p.add_argument("--memory-shots", default=",".join(map(str, DEFAULTS.shots)), help="shots of the measured full run")
    p.add_argument("--memory-episodes", type=positive_int("memory-episodes"), default=1,
                   help="episodes per shots of the measured full run (memory peaks while a method prepares and "
                        "in its first episode at the most shots; later episodes reuse that memory)")
    p.add_argument("--ray-method", default=None,
                   help="method of the Ray-against-local row (default: sdft where its step 1 is cached, else "
                        "sdft-no-step1, and no row where Ray is not installed; 'none' leaves the row out)")
    p.add_argument("--ray-episodes", type=positive_int("ray-episodes"), default=40)
    p.add_argument("--step1-batches", type=positive_int("step1-batches"), default=4,
                   help="batches of SDFT step 1 timed against a bare training loop")
    p.add_argument("--cold", action="store_true",
                   help="measure only the main job on a fresh clone (`bench run --method sdft --method protonet "
                        "--shots 5` with an empty cache, --episodes of them): its wall time and where it went")
    add_common(p)
    p.set_defaults(handler=cmd_perf)


def cmd_perf(args) -> int:
    from benchmark.console import RichProgressReporter
    from benchmark.perf import cold_job, ray_missing, run_perf
    from methods.devices import resolve_device
    from methods.registry import builtin_method_names
    from tasks.errors import UserError

    log = RichProgressReporter(enabled=False).log
    data_dir = Path(args.data_dir or default_data_dir())
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="marsfsl-cold-") as work:
            figures = cold_job(args.task, data_dir, Path(work), args.episodes, log)
        return print_figures(figures, f"bench perf --cold on {args.task}: the main job on a fresh clone", None)
    ray_method, left_out = args.ray_method, None
    if ray_method != "none" and (left_out := ray_missing()):  # before any work
        if ray_method is not None:  # asked for by name: a one-line error; the default row is left out, said so
            raise UserError(f"--ray-method {ray_method}: {left_out}")
        ray_method = "none"
        log(f"no Ray row: {left_out}")
    with tempfile.TemporaryDirectory(prefix="marsfsl-perf-") as work:
        figures = run_perf(args.task, data_dir, Path(args.cache_dir) if args.cache_dir else None, Path(work),
                           args.episodes, args.extraction_images, args.warm_method,
                           args.memory_method or builtin_method_names(), args.backbone,
                           args.image_size, args.memory_shots, args.memory_episodes,
                           log=log, device=resolve_device(args.device), ray_method=ray_method,
                           ray_episodes=args.ray_episodes, step1_batches=args.step1_batches)
    return print_figures(figures, f"bench perf on {args.task}: {os.cpu_count()} cores; episodes 5-way 5-shot "
                         f"15-query, {args.episodes} of them, on cached features",
                         f"No Ray row: {left_out}" if left_out else None)


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
