"""The fixed-K protocol as a resumable benchmark run (the protocol itself: tasks/protocols.py).

For each method and shots, `run_fixed_k` on the seeds that the results CSV does not hold yet; one row per
(method, shots, seed), appended under the results file's lock (benchmark/results.py, with this file's own
schema), so that the same command run again after an interruption continues where it stopped. Rows of the
same method and shots under other conditions (data, backbone, image size, ...) or from other code are not
taken for this run's (results.reusable_units).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from benchmark.results import Schema, append_rows, check_results_path, locked_if_present, matching, read_results, \
    reusable_units, set_aside, set_aside_path
from benchmark.runner import BenchConfig, MethodSpec, blamed, conditions, git_commit, versions
from benchmark.scoring import MethodFailed, score_fixed_k
from benchmark.stats import summarize
from methods.cache import Cache
from methods.progress import SILENT, Progress
from methods.registry import create_method
from tasks.protocols import PROTOCOL_VERSION, fixed_k_draw, run_fixed_k
from tasks.registry import Task, load_task

FIXED_K = Schema(
    name="fixed-K results",
    version=3,  # 3: draw (random or Mars-Bench's K-shot list) and capped (classes with fewer than K images)
    columns=("schema", "protocol", "task", "source", "data", "method", "method_version", "config", "shots", "seed",
             "n_train", "n_test", "accuracy", "weighted_f1", "macro_f1", "seconds", "backbone", "image_size",
             "preprocessing", "git_commit", "versions", "timestamp", "draw", "capped"),
    measurement=("protocol", "task", "method", "shots"),
    conditions=("source", "data", "method_version", "config", "backbone", "image_size", "preprocessing", "draw"),
    unit="seed",
    unit_fractions=("accuracy", "weighted_f1", "macro_f1"),
    counts={"protocol": 1, "shots": 1, "seed": 0, "n_train": 1, "n_test": 1, "image_size": 1, "method_version": 0},
)
SCHEMA_VERSION = FIXED_K.version
COLUMNS = list(FIXED_K.columns)
KEY = FIXED_K.key


@dataclass
class FixedKConfig(BenchConfig):
    seeds: list[int] = field(default_factory=lambda: list(range(10)))
    cap: bool = False  # at most K per class: a class with fewer training images gives all it has
    results_suffix = "-fixedk"


def read_fixedk(path: Path) -> pd.DataFrame:
    """All rows of a fixed-K results CSV (empty when there is none); one-line UserError if it is not one."""
    return read_results(path, FIXED_K)


def check_shots_feasible(task: Task, shots: list[int], cap: bool = False) -> None:
    """Too many shots for a class fails here, before any method is prepared (no draws are made)."""
    for k in shots:
        fixed_k_draw(task, k, cap)


def run_fixedk_benchmark(config: FixedKConfig, progress: Progress = SILENT, failures: list | None = None) -> pd.DataFrame:
    """Run (or resume) every method at every shots on the seeds; returns the rows of this configuration. A failing
    method raises MethodFailed, or with a `failures` list is appended there while the others run."""
    task = load_task(config.task, config.data_dir, source=config.source)
    methods = [(spec, create_method(spec.name, **spec.options)) for spec in config.methods]
    check_shots_feasible(task, config.shots, config.cap)
    out = config.results_path()
    check_results_path(out, FIXED_K)
    commit = git_commit()
    keys = [({"protocol": PROTOCOL_VERSION, "task": task.name, "method": spec.label, "shots": k},
             {**cond, "draw": fixed_k_draw(task, k, config.cap).draw})
            for (spec, _), cond in zip(methods, conditions(task, config, [m for _, m in methods])) for k in config.shots]
    if config.fresh:
        moved = set_aside(out, FIXED_K, [m for m, _ in keys])
        if moved:
            progress.log(f"--fresh: moved {moved} rows from {out} to {set_aside_path(out)}")
    with locked_if_present(out):
        frame = read_fixedk(out)
    done = [reusable_units(frame, FIXED_K, m, c, commit, out, f"{m['method']} {m['shots']}-shot", config.reuse_stale)
            & set(config.seeds) for m, c in keys]
    cache = Cache(config.cache_dir)
    provenance = {"git_commit": commit, "versions": versions()}
    plans = list(zip(keys, done))
    for m, (spec, method) in enumerate(methods):
        try:
            for (measurement, cond), seeds_done in plans[m * len(config.shots):(m + 1) * len(config.shots)]:
                run_pending_seeds(task, spec, method, measurement["shots"], {**measurement, **cond}, seeds_done,
                                  config, cache, provenance, out, progress)
        except MethodFailed as failure:
            if failures is None or config.stop_on_failure:
                raise
            failures.append(failure)
            progress.log(f"{failure.label} failed (the error follows at the end); the other methods go on")
    frame = read_fixedk(out)
    keep = pd.Series(False, index=frame.index)
    for measurement, cond in keys:
        keep |= matching(frame, {**measurement, **cond})
    keep &= frame["seed"].astype(int).isin(config.seeds)
    return frame[keep].reset_index(drop=True)


def run_pending_seeds(task: Task, spec: MethodSpec, method, k: int, key: dict, done: set[int], config: FixedKConfig,
                      cache: Cache, provenance: dict, out: Path, progress: Progress) -> None:
    pending = [s for s in config.seeds if s not in done]
    if done:
        progress.log(f"{spec.label} {k}-shot: {seeds(len(done))} already in {out}, {len(pending)} to run")
    if not pending:
        return
    started = time.perf_counter()
    with blamed(spec.label, "the fixed-K protocol", f" at {k} shots"):
        results = run_fixed_k(task, method, k, pending, cache, config.backbone, config.image_size, progress=progress,
                              score=score_fixed_k, cap=config.cap)
    timestamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = [{"schema": SCHEMA_VERSION, **key, **result, **provenance, "timestamp": timestamp} for result in results]
    append_rows(out, rows, FIXED_K)
    progress.log(f"{spec.label} {k}-shot: {seeds(len(pending))} in {time.perf_counter() - started:.1f} s")


def seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def summarize_over_seeds(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (shots, method): accuracy and weighted-F1 mean with 95% CI over seeds, seeds, seconds (fit and
    predict, summed over the seeds), n_train and n_test."""
    rows = rows.assign(capped=rows["capped"].astype(object).fillna("").astype(str), draw=rows["draw"].astype(str))
    return summarize(rows, ["shots", "method"], ("accuracy", "weighted_f1"), count="seeds", unique="seed",
                     extra={"seconds": ("seconds", "sum"), "n_train": ("n_train", "max"), "n_test": ("n_test", "max"),
                            "draw": ("draw", "max"), "capped": ("capped", "max")})
