"""`bench run`: methods on shared episodes, results appended to a CSV, a table per shots."""

from __future__ import annotations

import time

from benchmark.cli import add_benchmark_options, add_episode_shape, benchmark_config, positive_int


def add_parser(sub) -> None:
    run = sub.add_parser("run", help="run methods on shared episodes and append results")
    settings = run.settings
    add_benchmark_options(run, f"{settings.runs}/<task>.csv")
    add_episode_shape(run, settings.episodes, fewest=1)
    run.add_argument(
        "--split",
        choices=settings.splits,
        default=settings.split,
        help="where episodes come from: the target pool, or the validation slice of the base "
        "pool that settings are chosen on (task NAME@validation, rows in <task>-validation.csv)",
    )
    run.add_argument(
        "--threads",
        type=positive_int("threads"),
        default=settings.threads,
        help="threads that extract features (whole batches each), train on fixed micro-batches and "
        "answer batched episodes (whole chunks each) side by side (default: all cores); "
        "everything runs on one intra-op thread, so results are bit-identical for any N",
    )
    run.set_defaults(handler=cmd_run)


def cmd_run(args) -> int:
    import torch

    from benchmark.console import RichProgressReporter, finish, results_tables, stdout
    from benchmark.pipeline import run
    from benchmark.protocols.episodes import Episodes
    from benchmark.runner import RunConfig
    from benchmark.stats import summarize_episodes
    from methods.backbones import check_backbone
    from methods.features import thread_policy

    check_backbone(args.backbone)  # before any work, not when the first method prepares
    config = RunConfig(
        **benchmark_config(args),
        n_way=args.ways,
        n_query=args.queries,
        episodes=args.episodes,
        seed=args.seed,
        split=args.split,
    )
    started = time.perf_counter()
    failures: list = []
    with thread_policy(args.threads or torch.get_num_threads()):
        rows = run(Episodes(config), RichProgressReporter(enabled=not args.quiet), failures)
    if len(rows):
        for table in results_tables(summarize_episodes(rows), rows.attrs.get("notes", ())):
            stdout.print(table)
    return finish(config.results_path(), started, failures)
