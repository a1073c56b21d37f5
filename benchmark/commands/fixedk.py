"""`bench fixedk`: the fixed-K protocol (K images per class, the whole test pool, once per seed), a table per shots."""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from benchmark.cli import add_common, default_data_dir, int_list
from benchmark.commands.run import IMAGE_SIZES, bounded_int

MAX_SEEDS = 10_000  # seeds are listed before any work: a mistyped range must not run for days


def seed_list(text: str) -> list[int]:
    """argparse type: '0-9', '0,1,2' or a mix ('0-4,7'); non-negative integers, sorted, each once."""
    bad = argparse.ArgumentTypeError(f"--seeds must be non-negative integers or ranges like 0-9, separated by "
                                     f"commas, got {text!r}")
    seeds: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, dash, last = part.partition("-")
        try:
            low, high = int(first), int(last if dash else first)
        except ValueError:
            raise bad from None
        if low < 0 or high < low:
            raise bad
        if high - low + 1 > MAX_SEEDS:
            raise argparse.ArgumentTypeError(f"--seeds names more than {MAX_SEEDS} seeds, got {text!r}")
        seeds.update(range(low, high + 1))
    if not seeds:
        raise bad
    if len(seeds) > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"--seeds names more than {MAX_SEEDS} seeds, got {text!r}")
    return sorted(seeds)


def add_parser(sub) -> None:
    p = sub.add_parser("fixedk", help="fixed-K protocol: K images per class, the whole test pool, over seeds")
    p.add_argument("--method", action="append", required=True, metavar="NAME[:key=value,...]",
                   help="method to run (repeat for several)")
    p.add_argument("--task", default="hirise-regions")
    p.add_argument("--shots", type=int_list, default=[1, 5, 10, 20], help="training images per class, e.g. 1,5,10,20")
    p.add_argument("--seeds", type=seed_list, default=list(range(10)), help="draws to average over: 0-9 or 0,1,2")
    p.add_argument("--out", default=None, help="results CSV (default: results/<task>-fixedk.csv)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--image-size", type=bounded_int("image-size", *IMAGE_SIZES), default=128)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--cap", action="store_true", help="at most K per class: a class with fewer training images "
                                                      "gives all it has (listed in the table and the rows)")
    p.add_argument("--source", default=None, metavar="SPEC",
                   help="base pool of every pre-training method: a task (its base pool) or a dataset (all its images)")
    add_common(p)
    p.set_defaults(handler=cmd_fixedk)


def with_ci(mean: float, half: float) -> str:
    """A percentage and its 95% CI half-width; the CI of a single seed is undefined."""
    return f"{100 * mean:.2f} ± {'n/a' if math.isnan(half) else f'{100 * half:.2f}'}"


def fixedk_tables(task: str, summary):
    from rich.table import Table

    tables = []
    for shots, g in summary.groupby("shots", sort=True):
        n_test = int(g["n_test"].max())
        notes = ["mean ± 95% CI over seeds"]
        if "draw" in g and (g["draw"] == "marsbench-list").any():
            notes.append(f"training images: Mars-Bench's {shots}-shot list, the same for every seed")
        capped = sorted({c for value in g.get("capped", []) for c in str(value).split("|") if c and c != "nan"})
        if capped:
            notes.append(f"capped (fewer than {shots} training images, all taken): {', '.join(capped)}")
        table = Table(title=f"{task}: fixed-K {shots}-shot, {n_test} test images", caption="; ".join(notes))
        for column, justify in (("method", "left"), ("accuracy %", "right"), ("weighted-F1 %", "right"),
                                ("seeds", "right"), ("seconds", "right")):
            table.add_column(column, justify=justify)
        for _, r in g.sort_values(["accuracy", "method"], ascending=[False, True]).iterrows():
            table.add_row(r["method"], with_ci(r["accuracy"], r["accuracy_ci95"]),
                          with_ci(r["weighted_f1"], r["weighted_f1_ci95"]), str(r["seeds"]), f"{r['seconds']:.2f}")
        tables.append(table)
    return tables


def cmd_fixedk(args) -> int:
    import torch
    from rich.console import Console

    from benchmark.console import RichProgressReporter, console, stdout
    from benchmark.fixedk import FixedKConfig, run_fixedk_benchmark, summarize_over_seeds
    from benchmark.runner import MethodSpec
    from methods.backbones import check_backbone
    from methods.features import thread_policy

    check_backbone(args.backbone)
    config = FixedKConfig(
        methods=[MethodSpec.parse(m) for m in args.method], task=args.task, shots=args.shots, seeds=args.seeds,
        data_dir=Path(args.data_dir or default_data_dir()),
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        out=Path(args.out) if args.out else None, backbone=args.backbone, image_size=args.image_size,
        cap=args.cap, source=args.source,
    )
    started = time.perf_counter()
    with thread_policy(torch.get_num_threads()):  # as `bench run`: features bit-identical for any core count
        rows = run_fixedk_benchmark(config, RichProgressReporter(enabled=not args.quiet))
    printer = stdout if stdout.is_terminal else Console(width=180)  # a file or pipe gets unwrapped rows
    for table in fixedk_tables(args.task + (f" (source {args.source})" if args.source else ""),
                               summarize_over_seeds(rows)):
        printer.print(table)
    console.print(f"results: {config.results_path()}  ({time.perf_counter() - started:.1f} s)", highlight=False)
    return 0
