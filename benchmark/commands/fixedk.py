"""`bench fixedk`: the fixed-K protocol (K images per class, the whole test pool, once per seed), a table per shots."""

from __future__ import annotations

import time

from benchmark.cli import add_benchmark_options, benchmark_config, seed_list


def add_parser(sub) -> None:
    p = sub.add_parser("fixedk", help="fixed-K protocol: K images per class, the whole test pool, over seeds")
    add_benchmark_options(p, f"{p.settings.runs}/<task>-fixedk.csv")
    p.add_argument(
        "--seeds", type=seed_list, default=list(p.settings.fixedk_seeds), help="draws to average over: 0-9 or 0,1,2"
    )
    p.add_argument(
        "--cap",
        action="store_true",
        help="at most K per class: a class with fewer training images "
        "gives all it has (listed in the table and the rows)",
    )
    p.set_defaults(handler=cmd_fixedk)


def fixedk_tables(task: str, summary, notes=()):
    import pandas as pd
    from rich.table import Table

    from benchmark.leaderboard import marked, transductive_note
    from benchmark.stats import pm

    tables = []
    for shots, g in summary.groupby("shots", sort=True):
        n_test = int(g["n_test"].max())
        lines = ["mean ± 95% CI over seeds", *notes]
        if "draw" in g and (g["draw"] == "marsbench-list").any():
            lines.append(f"training images: Mars-Bench's {shots}-shot list, the same for every seed")
        capped = sorted({c for value in g.get("capped", []) for c in str(value).split("|") if c and c != "nan"})
        if capped:
            lines.append(f"capped (fewer than {shots} training images, all taken): {', '.join(capped)}")
        table = Table(title=f"{task}: fixed-K {shots}-shot, {n_test} test images", caption="; ".join(lines))
        for column, justify in (
            ("method", "left"),
            ("accuracy %", "right"),
            ("weighted-F1 %", "right"),
            ("seeds", "right"),
            ("seconds", "right"),
        ):
            table.add_column(column, justify=justify)
        if g.get("transductive", pd.Series(dtype=int)).astype(bool).any():
            table.caption += "; " + transductive_note("the whole test pool")
        for _, r in g.sort_values(["accuracy", "method"], ascending=[False, True]).iterrows():
            table.add_row(
                marked(r["method"], r.get("transductive", 0)),
                pm(r["accuracy"], r["accuracy_ci95"], undefined="n/a"),
                pm(r["weighted_f1"], r["weighted_f1_ci95"], undefined="n/a"),
                str(r["seeds"]),
                f"{r['seconds']:.2f}",
            )
        tables.append(table)
    return tables


def cmd_fixedk(args) -> int:
    import torch
    from rich.console import Console

    from benchmark.console import RichProgressReporter, finish, stdout
    from benchmark.fixedk import FixedKConfig, summarize_over_seeds
    from benchmark.pipeline import run
    from benchmark.protocols.fixedk import FixedK
    from methods.backbones import check_backbone
    from methods.features import thread_policy

    check_backbone(args.backbone)
    config = FixedKConfig(**benchmark_config(args), seeds=args.seeds, cap=args.cap)
    started = time.perf_counter()
    failures: list = []
    with thread_policy(torch.get_num_threads()):  # as `bench run`: features bit-identical for any core count
        rows = run(FixedK(config), RichProgressReporter(enabled=not args.quiet), failures)
    printer = stdout if stdout.is_terminal else Console(width=180)  # a file or pipe gets unwrapped rows
    if len(rows):
        for table in fixedk_tables(
            args.task + (f" (source {args.source})" if args.source else ""),
            summarize_over_seeds(rows),
            rows.attrs.get("notes", ()),
        ):
            printer.print(table)
    return finish(config.results_path(), started, failures)
