"""The cheating plugins' table (docs/adding-a-method.md): each plugin of tests/cheating_plugins.py on a task, with
protonet beside them, in-process or under --isolate.

    BENCH_DATA_DIR=../shared/data python tests/probe_table.py --task aid-classes --ways 5 --shots 1
    python tests/probe_table.py --task folder:PATH --ways 3 --queries 5 --image-size 32 [--isolate]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cheating_plugins  # noqa: E402  (registers the plugins)

from benchmark.protocols.episodes import run_benchmark  # noqa: E402
from benchmark.runner import MethodSpec, RunConfig  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True)
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--out", default="runs/probes/probes.csv")
    p.add_argument("--disk", default=None, help="the folder cheat-disk re-reads (default: the folder: task's)")
    p.add_argument("--isolate", action="store_true")
    args = p.parse_args()
    data_dir = Path(os.environ.get("BENCH_DATA_DIR", "data"))
    disk = args.disk or (args.task.split(":", 1)[1] if args.task.startswith("folder:") else str(data_dir))
    out = Path(args.out)
    names = [
        *"protonet cheat-rows cheat-paths cheat-memory-features cheat-memory-rows".split(),
        f"cheat-manifests:out={out}",
        f"cheat-disk:data={disk}",
        "cheat-gc",
        "cheat-memory-shm",
    ]
    common = dict(
        task=args.task,
        shots=[args.shots],
        n_way=args.ways,
        n_query=args.queries,
        episodes=args.episodes,
        image_size=args.image_size,
        data_dir=data_dir,
        out=out,
        isolate=args.isolate,
        reuse_stale=True,
    )
    print(f"| plugin | {args.task} {args.ways}-way {args.shots}-shot{' --isolate' if args.isolate else ''} |")
    print("|---|---|")
    for name in names:
        cheating_plugins.MEMORY.clear()
        failures = []
        try:
            rows = run_benchmark(RunConfig(methods=[MethodSpec.parse(name)], **common), failures=failures)
            why = str(failures[0]) if failures else ""
            result = (
                "refused: answers depend on earlier episodes"
                if "depend on earlier" in why
                else "refused: answers depend on the other queries"
                if "depend on the other queries" in why
                else f"failed: {why[:80]}"
                if failures
                else f"{100 * rows['accuracy'].mean():.1f} % ({len(rows)} episodes)"
            )
        finally:
            cheating_plugins.SharedMemory.remove()
        print(f"| {name.split(':')[0]} | {result} |", flush=True)


if __name__ == "__main__":
    main()
