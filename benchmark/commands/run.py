"""`bench run`: methods on shared episodes, results appended to a CSV, a table per shots."""
from __future__ import annotations

import time
from pathlib import Path

from benchmark.cli import add_common, default_data_dir, int_list, positive_int


def add_parser(sub) -> None:
    run = sub.add_parser("run", help="run methods on shared episodes and append results")
    run.add_argument("--method", action="append", required=True, metavar="NAME[:key=value,...]",
                     help="method to run (repeat for several)")
    run.add_argument("--task", default="hirise-regions")
    run.add_argument("--shots", type=int_list, default=[1, 5, 10, 20], help="e.g. 1,5,10,20")
    run.add_argument("--ways", type=positive_int("ways"), default=5)
    run.add_argument("--queries", type=positive_int("queries"), default=15)
    run.add_argument("--episodes", type=positive_int("episodes"), default=600)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", default=None, help="results CSV (default: results/<task>.csv)")
    run.add_argument("--backbone", default="efficientnet_lite0")
    run.add_argument("--image-size", type=positive_int("image-size"), default=128)
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    add_common(run)

    run.set_defaults(handler=cmd_run)


def cmd_run(args) -> int:
    from benchmark.console import RichProgressReporter, console, results_tables, stdout, summarize
    from benchmark.runner import MethodSpec, RunConfig, run_benchmark

    config = RunConfig(
        methods=[MethodSpec.parse(m) for m in args.method], task=args.task, shots=args.shots, ways=args.ways,
        queries=args.queries, episodes=args.episodes, seed=args.seed,
        data_dir=Path(args.data_dir or default_data_dir()),
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        out=Path(args.out) if args.out else None, backbone=args.backbone, image_size=args.image_size,
    )
    started = time.perf_counter()
    rows = run_benchmark(config, RichProgressReporter(enabled=not args.quiet))
    for table in results_tables(summarize(rows)):
        stdout.print(table)
    console.print(f"results: {config.results_path()}  ({time.perf_counter() - started:.1f} s)", highlight=False)
    return 0
