"""`bench run`: methods on shared episodes, results appended to a CSV, a table per shots."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmark.cli import add_common, default_data_dir, int_list, positive_int

MAX_EPISODES = 100_000  # episodes are drawn before any work: a mistyped count must not hang the run
IMAGE_SIZES = (16, 1024)  # decoded images are held in memory: (n, 3, S, S) bytes


def bounded_int(name: str, low: int, high: int | None = None):
    """argparse type: an integer in [low, high], else a one-line error naming the option."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            span = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
            raise argparse.ArgumentTypeError(f"--{name} must be {span}, got {text!r}")
        return value

    return convert


def add_parser(sub) -> None:
    run = sub.add_parser("run", help="run methods on shared episodes and append results")
    run.add_argument("--method", action="append", required=True, metavar="NAME[:key=value,...]",
                     help="method to run (repeat for several)")
    run.add_argument("--task", default="hirise-regions")
    run.add_argument("--shots", type=int_list, default=[1, 5, 10, 20], help="e.g. 1,5,10,20")
    run.add_argument("--ways", type=positive_int("ways"), default=5)
    run.add_argument("--queries", type=positive_int("queries"), default=15)
    run.add_argument("--episodes", type=bounded_int("episodes", 1, MAX_EPISODES), default=600)
    run.add_argument("--seed", type=bounded_int("seed", 0), default=0)
    run.add_argument("--out", default=None, help="results CSV (default: results/<task>.csv)")
    run.add_argument("--backbone", default="efficientnet_lite0")
    run.add_argument("--image-size", type=bounded_int("image-size", *IMAGE_SIZES), default=128)
    run.add_argument("--threads", type=positive_int("threads"), default=None,
                     help="threads that extract features (whole batches each) and answer batched episodes (whole "
                          "chunks each) side by side (default: all cores); everything runs on one intra-op thread, "
                          "so results are bit-identical for any N")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--source", default=None, metavar="SPEC",
                     help="base pool of every pre-training method: a task (its base pool) or a dataset (all its images)")
    add_common(run)

    run.set_defaults(handler=cmd_run)


def cmd_run(args) -> int:
    import torch

    from benchmark.console import RichProgressReporter, console, results_tables, stdout, summarize
    from benchmark.runner import MethodSpec, RunConfig, run_benchmark
    from methods.backbones import check_backbone
    from methods.features import thread_policy

    check_backbone(args.backbone)  # before any work, not when the first method prepares
    config = RunConfig(
        methods=[MethodSpec.parse(m) for m in args.method], task=args.task, shots=args.shots, ways=args.ways,
        queries=args.queries, episodes=args.episodes, seed=args.seed,
        data_dir=Path(args.data_dir or default_data_dir()),
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        out=Path(args.out) if args.out else None, backbone=args.backbone, image_size=args.image_size,
        source=args.source,
    )
    started = time.perf_counter()
    with thread_policy(args.threads or torch.get_num_threads()):
        rows = run_benchmark(config, RichProgressReporter(enabled=not args.quiet))
    for table in results_tables(summarize(rows)):
        stdout.print(table)
    console.print(f"results: {config.results_path()}  ({time.perf_counter() - started:.1f} s)", highlight=False)
    return 0
