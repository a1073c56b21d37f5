"""`bench run`: methods on shared episodes, results appended to a CSV, a table per shots."""
from __future__ import annotations

import time

from benchmark.cli import DEFAULTS, SEED_MAX, add_benchmark_options, benchmark_config, bounded_int, \
    positive_int

MAX_EPISODES = 100_000  # episodes are drawn before any work: a mistyped count must not hang the run


def add_parser(sub) -> None:
    run = sub.add_parser("run", help="run methods on shared episodes and append results")
    add_benchmark_options(run, f"{DEFAULTS.runs}/<task>.csv")
    run.add_argument("--ways", type=positive_int("ways"), default=DEFAULTS.n_way)
    run.add_argument("--queries", type=positive_int("queries"), default=DEFAULTS.n_query)
    run.add_argument("--episodes", type=bounded_int("episodes", 1, MAX_EPISODES), default=DEFAULTS.episodes)
    run.add_argument("--seed", type=bounded_int("seed", 0, SEED_MAX), default=0)
    run.add_argument("--split", choices=DEFAULTS.splits, default=DEFAULTS.splits[0],
                     help="where episodes come from: the target pool (default), or the validation slice of the base "
                          "pool that settings are chosen on (task NAME@validation, rows in <task>-validation.csv)")
    run.add_argument("--threads", type=positive_int("threads"), default=None,
                     help="threads that extract features (whole batches each), train on fixed micro-batches and "
                          "answer batched episodes (whole chunks each) side by side (default: all cores); "
                          "everything runs on one intra-op thread, so results are bit-identical for any N")
    run.set_defaults(handler=cmd_run)


def cmd_run(args) -> int:
    import torch

    from benchmark.console import RichProgressReporter, finish, results_tables, stdout
    from benchmark.runner import RunConfig, run_benchmark
    from benchmark.stats import summarize_episodes
    from methods.backbones import check_backbone
    from methods.features import thread_policy

    check_backbone(args.backbone)  # before any work, not when the first method prepares
    config = RunConfig(**benchmark_config(args), n_way=args.ways, n_query=args.queries, episodes=args.episodes,
                       seed=args.seed, split=args.split)
    started = time.perf_counter()
    failures: list = []
    with thread_policy(args.threads or torch.get_num_threads()):
        rows = run_benchmark(config, RichProgressReporter(enabled=not args.quiet), failures)
    if len(rows):
        for table in results_tables(summarize_episodes(rows)):
            stdout.print(table)
    return finish(config.results_path(), started, failures)
