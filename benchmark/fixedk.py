"""The fixed-K protocol as a resumable benchmark run (the protocol itself: tasks/protocols.py).

For each method and shots, `run_fixed_k` on the seeds that the results CSV does not hold yet; one row per
(method, shots, seed), appended under the results file's lock (benchmark/results.py, with this file's own
columns), so that the same command run again after an interruption continues where it stopped.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from benchmark.results import append_rows, check_results_path, matching, read_results, recorded
from benchmark.runner import BenchConfig, MethodSpec, git_commit, method_config, versions
from benchmark.stats import over_seeds
from methods.cache import Cache
from methods.progress import SILENT, Progress
from methods.registry import create_method
from tasks.protocols import PROTOCOL_VERSION, fixed_k_draw, run_fixed_k
from tasks.registry import Task, load_task

SCHEMA_VERSION = 1
COLUMNS = [
    "schema", "protocol", "task", "method", "config", "shots", "seed", "n_train", "n_test", "accuracy",
    "weighted_f1", "macro_f1", "seconds", "backbone", "image_size", "git_commit", "versions", "timestamp",
    "draw", "capped",
]
# What identifies a row. Backbone and image size are part of it: a run with other features is another
# measurement, not a repeat to skip.
KEY = ["protocol", "task", "method", "config", "backbone", "image_size", "shots", "seed", "draw"]


@dataclass
class FixedKConfig(BenchConfig):
    seeds: list[int] = field(default_factory=lambda: list(range(10)))
    cap: bool = False  # at most K per class: a class with fewer training images gives all it has
    results_suffix = "-fixedk"


def read_fixedk(path: Path) -> pd.DataFrame:
    """All rows of a fixed-K results CSV (empty when there is none); one-line UserError if it is not one."""
    return read_results(path, COLUMNS)


def check_shots_feasible(task: Task, shots: list[int], cap: bool = False) -> None:
    """Too many shots for a class fails here, before any method is prepared (no draws are made)."""
    for k in shots:
        fixed_k_draw(task, k, cap)


def run_fixedk_benchmark(config: FixedKConfig, progress: Progress = SILENT) -> pd.DataFrame:
    """Run (or resume) every method at every shots on the seeds; returns the rows of this configuration."""
    task = load_task(config.task, config.data_dir, source=config.source)
    methods = [(spec, create_method(spec.name, **spec.options)) for spec in config.methods]
    check_shots_feasible(task, config.shots, config.cap)
    out = config.results_path()
    check_results_path(out, COLUMNS, manifests=False)
    cache = Cache(config.cache_dir)
    provenance = {"backbone": config.backbone, "image_size": config.image_size, "git_commit": git_commit(),
                  "versions": versions()}
    for spec, method in methods:
        for k in config.shots:
            run_pending_seeds(task, spec, method, k, config, cache, provenance, out, progress)
    return rows_of(config, task, methods, out)


def run_pending_seeds(task: Task, spec: MethodSpec, method, k: int, config: FixedKConfig, cache: Cache,
                      provenance: dict, out: Path, progress: Progress) -> None:
    key = {"protocol": PROTOCOL_VERSION, "task": task.name, "method": spec.label, "config": method_config(method),
           "backbone": config.backbone, "image_size": config.image_size, "shots": k,
           "draw": fixed_k_draw(task, k, config.cap).draw}
    done = recorded(out, key, "seed", COLUMNS) & set(config.seeds)
    pending = [s for s in config.seeds if s not in done]
    if done:
        progress.log(f"{spec.label} {k}-shot: {seeds(len(done))} already in {out}, {len(pending)} to run")
    if not pending:
        return
    started = time.perf_counter()
    results = run_fixed_k(task, method, k, pending, cache, config.backbone, config.image_size, progress=progress,
                          cap=config.cap)
    timestamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = [{"schema": SCHEMA_VERSION, **key, **result, **provenance, "timestamp": timestamp} for result in results]
    append_rows(out, rows, COLUMNS, KEY)
    progress.log(f"{spec.label} {k}-shot: {seeds(len(pending))} in {time.perf_counter() - started:.1f} s")


def seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def rows_of(config: FixedKConfig, task: Task, methods, out: Path) -> pd.DataFrame:
    """The file's rows for this task, these methods (label and config), shots, seeds, features and protocol."""
    frame = read_fixedk(out)
    keep = matching(frame, {"protocol": PROTOCOL_VERSION, "task": task.name, "backbone": config.backbone,
                            "image_size": config.image_size})
    keep &= frame["shots"].astype(int).isin(config.shots) & frame["seed"].astype(int).isin(config.seeds)
    draws = {k: fixed_k_draw(task, k, config.cap).draw for k in config.shots}
    keep &= pd.Series([draws.get(int(k)) == str(d) for k, d in zip(frame["shots"], frame["draw"])], index=frame.index,
                      dtype=bool)
    labelled = pd.Series(False, index=frame.index)
    for spec, method in methods:
        labelled |= matching(frame, {"method": spec.label, "config": method_config(method)})
    return frame[keep & labelled].reset_index(drop=True)


def summarize_over_seeds(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (shots, method): accuracy and weighted-F1 mean with 95% CI over seeds, seeds, seconds (fit and
    predict, summed over the seeds), n_train and n_test."""
    summary = over_seeds(rows, ["shots", "method"])
    if summary.empty:
        return summary
    rows = rows.assign(capped=rows["capped"].astype(object).fillna("").astype(str), draw=rows["draw"].astype(str))
    extra = rows.groupby(["shots", "method"], sort=True).agg(seconds=("seconds", "sum"), n_train=("n_train", "max"),
                                                             n_test=("n_test", "max"), draw=("draw", "first"),
                                                             capped=("capped", "first")).reset_index()
    return summary.merge(extra, on=["shots", "method"])
