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

import numpy as np
import pandas as pd

from benchmark.results import WEIGHTS_COLUMNS, Schema, append_rows, check_results_path, locked_if_present, matching, read_results, \
    reusable_units, set_aside, set_aside_path
from benchmark.runner import BenchConfig, MethodSpec, blamed, conditions, created_methods, git_commit, make_executor, \
    method_cache, method_context, versions
from benchmark.scoring import MethodFailed, score_fixed_k
from benchmark.stats import summarize
from common.settings import DEFAULTS
from methods.backbones import DEFAULT_BACKBONE
from methods.devices import CPU
from methods.cache import Cache
from methods.base import handed
from methods.features import DEFAULT_IMAGE_SIZE
from methods.progress import SILENT, Progress
from tasks.protocols import (DRAW_TAG, PROTOCOL_VERSION, BlindFixedKSet, FixedKPools, fixed_k_draw, fixed_k_pools,
                             fixed_k_sets, pretraining_pool, protocol_base)
from tasks.handles import RowHandles
from tasks.registry import Task, load_task

FIXED_V3 = ("schema", "protocol", "task", "source", "data", "method", "method_version", "config", "shots", "seed",
            "n_train", "n_test", "accuracy", "weighted_f1", "macro_f1", "seconds", "backbone", "image_size",
            "preprocessing", "device", "git_commit", "versions", "timestamp", "draw", "capped")
FIXED_K = Schema(
    name="fixed-K results",
    # device: where the networks ran; draw: random or Mars-Bench's K-shot list; capped: classes with fewer than
    # K images
    version=5,
    columns=FIXED_V3 + WEIGHTS_COLUMNS,
    measurement=("protocol", "task", "method", "shots"),
    conditions=("source", "data", "method_version", "config", "backbone", "image_size", "preprocessing", "device",
                "draw", *WEIGHTS_COLUMNS),
    unit="seed",
    unit_fractions=("accuracy", "weighted_f1", "macro_f1"),
    counts={"protocol": 1, "shots": 1, "seed": 0, "n_train": 1, "n_test": 1, "image_size": 1, "method_version": 0},
    outcome=("n_train", "n_test", "accuracy", "weighted_f1", "macro_f1"),
    flags=("transductive", "isolated"),
)
SCHEMA_VERSION = FIXED_K.version
PREDICT_CHUNK = 4096  # test images per predict call (a transductive method gets the whole pool, its query)


@dataclass
class FixedKConfig(BenchConfig):
    seeds: list[int] = field(default_factory=lambda: list(DEFAULTS.fixedk_seeds))
    cap: bool = False  # at most K per class: a class with fewer training images gives all it has
    results_suffix = "-fixedk"


def read_fixedk(path: Path) -> pd.DataFrame:
    """All rows of a fixed-K results CSV (empty when there is none); one-line UserError if it is not one."""
    return read_results(path, FIXED_K)


def check_shots_feasible(task: Task, shots: list[int], cap: bool = False, pools: FixedKPools | None = None) -> None:
    """Too many shots for a class fails here, before any method is prepared (no draws are made)."""
    for k in shots:
        fixed_k_draw(task, k, cap, pools)


def run_fixed_k(task: Task, method, k: int, seeds, cache, backbone: str | None = None, image_size: int | None = None,
                prepare_seed: int = 0, progress=None, pools: FixedKPools | None = None, cap: bool = False,
                device=None, executor=None, label: str = "method") -> list[dict]:
    """Run a FewShotMethod (prepare once, then per seed fit on the K-per-class draw and predict the whole test
    pool); one dict per seed: seed, shots, n_train, n_test, accuracy, weighted_f1, macro_f1, seconds, draw and
    capped (fixed_k_draw's, the capped classes joined by `|`).

    The method is prepared on a copy of the task whose base pool is `protocol_base` and whose target is the
    test pool, so that nothing it pre-trains on is drawn or scored. `pools`: fixed_k_pools(task) where the
    caller has them.
    """
    pools = pools or fixed_k_pools(task)
    draw = fixed_k_draw(task, k, cap, pools)
    sets = fixed_k_sets(task, k, seeds, cap, pools)
    view = Task(task.name, f"{task.description} (fixed-K protocol)", task.table, protocol_base(task, pools),
                pools.test, source=task.source)
    handles = RowHandles.of_table(task.table)
    backbone, image_size, device = backbone or DEFAULT_BACKBONE, image_size or DEFAULT_IMAGE_SIZE, device or CPU
    if hasattr(executor, "prepare"):  # prepared in its sandbox (benchmark/sandbox.py)
        given = handed(view, cache, backbone, image_size, type(method).consumes, progress or SILENT, device, handles)
        executor.prepare(method, given, method_cache(cache, method).root, backbone, image_size, prepare_seed,
                         str(device))
    else:
        method.prepare(method_context(view, method, cache, backbone, image_size, prepare_seed, progress or SILENT,
                                      device, handles))
    n_classes = len(pools.classes)
    blind = [s.blind(handles) for s in sets]  # all that fit and predict see, here or on a Ray worker
    if executor is not None:  # chunks of seeds on its workers (benchmark/executors.py), in seed order
        extra = {"draw_tag": DRAW_TAG, "chunk": PREDICT_CHUNK} if hasattr(executor, "prepare") else {}
        answers = executor.seed_answers(fixed_k_answers, method, k, list(seeds), blind, n_classes, label, **extra)
    else:
        answers = fixed_k_answers(method, k, seeds, blind, n_classes)
    rows = [{"seed": seed, "shots": int(k), "n_train": len(s.train_idx), "n_test": len(s.test_idx),
             **score_fixed_k(s.test_y, in_test_order(scores, s.test_order(handles)), n_classes),
             "seconds": round(seconds, 6)}
            for (seed, scores, seconds), s in zip(answers, sets)]
    return [{**row, "draw": draw.draw, "capped": "|".join(draw.capped)} for row in rows]


def in_test_order(scores, order: np.ndarray):
    """Scores answered for the blind set's test rows (ascending handles) in the draw's test order (as given
    where their length does not fit: scoring names the problem)."""
    scores = np.asarray(scores)
    return scores[order] if scores.ndim >= 1 and len(scores) == len(order) else scores


def fixed_k_answers(method, k: int, seeds, sets: list[BlindFixedKSet], n_classes: int) -> list[tuple]:
    """Per seed: fit the prepared method on its draw and predict the whole test pool; (seed, (n_test, n_classes)
    scores, seconds of fit and predict). The caller, which holds the test labels, scores them."""
    answers = []
    for seed, s in zip(seeds, sets):
        started = time.perf_counter()
        # copies: what a method does to its arguments never reaches the draw
        method.fit(s.train_idx.copy(), s.train_y.copy(), n_classes,
                   np.random.default_rng([int(seed), int(k), DRAW_TAG, 1]))
        chunk = len(s.test_idx) if getattr(method, "transductive", False) else PREDICT_CHUNK  # its query: the pool
        scores = np.concatenate([method.predict(s.test_idx[i:i + chunk].copy())
                                 for i in range(0, len(s.test_idx), max(chunk, 1))])
        answers.append((int(seed), scores, time.perf_counter() - started))
    return answers


def run_fixedk_benchmark(config: FixedKConfig, progress: Progress = SILENT, failures: list | None = None) -> pd.DataFrame:
    """Run (or resume) every method at every shots on the seeds; returns the rows of this configuration. A failing
    method raises MethodFailed, or with a `failures` list is appended there while the others run."""
    cache = Cache(config.cache_dir)  # first: it points the dataset-digest cache at --cache-dir
    task = load_task(config.task, config.data_dir, source=config.source, image_size=config.image_size,
                     source_disjoint=config.source_disjoint)
    out = config.results_path()
    methods = created_methods(config, cache, out)  # an unknown method or a bad option fails first
    pools = fixed_k_pools(task)  # once for every method and shots
    check_shots_feasible(task, config.shots, config.cap, pools)
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
    provenance = {"git_commit": commit, "versions": versions()}
    executor = make_executor(config, cache, out, progress)
    plans = list(zip(keys, done))
    for m, (spec, method) in enumerate(methods):
        try:
            for (measurement, cond), seeds_done in plans[m * len(config.shots):(m + 1) * len(config.shots)]:
                run_pending_seeds(task, spec, method, measurement["shots"], {**measurement, **cond}, seeds_done,
                                  config, cache, provenance, out, progress, pools, executor)
        except MethodFailed as failure:
            if failures is None or config.stop_on_failure:
                raise
            failures.append(failure)
            progress.log(f"{failure.label} failed (the error follows at the end); the other methods go on")
    if executor is not None:
        progress.log(executor.summary())
    frame = read_fixedk(out)
    keep = pd.Series(False, index=frame.index)
    for measurement, cond in keys:
        keep |= matching(frame, {**measurement, **cond})
    keep &= frame["seed"].astype(int).isin(config.seeds)
    rows = frame[keep].reset_index(drop=True)
    rows.attrs["notes"] = [pretraining_pool(task, pools), *task.notes()]  # for the tables' header
    return rows


def run_pending_seeds(task: Task, spec: MethodSpec, method, k: int, key: dict, done: set[int], config: FixedKConfig,
                      cache: Cache, provenance: dict, out: Path, progress: Progress,
                      pools: FixedKPools | None = None, executor=None) -> None:
    pending = [s for s in config.seeds if s not in done]
    if done:
        progress.log(f"{spec.label} {k}-shot: {seeds(len(done))} already in {out}, {len(pending)} to run")
    if not pending:
        return
    started = time.perf_counter()
    with blamed(spec.label, "the fixed-K protocol", f" at {k} shots"):
        results = run_fixed_k(task, method, k, pending, cache, config.backbone, config.image_size, progress=progress,
                              pools=pools, cap=config.cap, device=config.device, executor=executor, label=spec.label)
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
                            "draw": ("draw", "max"), "capped": ("capped", "max"),
                            "transductive": ("transductive", "max")})
