"""The fixed-K protocol's schema, settings and unit of work (the draws themselves: tasks/protocols.py).

`run_fixed_k` prepares a method and answers and scores its seeds; benchmark/protocols/fixedk.py runs it on
the seeds that the results CSV does not hold yet, one row per (method, shots, seed), through the pipeline
(benchmark/pipeline.py: resume, refuse or set aside, append under the lock).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import answer_checks
from benchmark.columns import CONDITIONS, FIXED_K_COLUMNS, WEIGHTS_COLUMNS
from benchmark.results import Schema, read_results
from benchmark.runner import BenchConfig, prepared_by
from benchmark.scoring import score_fixed_k
from benchmark.stats import summarize
from common.settings import DEFAULTS
from methods.progress import SILENT, Progress
from tasks.handles import RowHandles
from tasks.protocols import (
    DRAW_TAG,
    BlindFixedKSet,
    FixedKPools,
    fixed_k_draw,
    fixed_k_pools,
    fixed_k_sets,
    protocol_base,
)
from tasks.registry import Task

FIXED_K = Schema(
    name="fixed-K results",
    version=5,
    columns=FIXED_K_COLUMNS,
    measurement=("protocol", "task", "method", "shots"),
    conditions=(*CONDITIONS, "draw", *WEIGHTS_COLUMNS),
    unit="seed",
    unit_fractions=("accuracy", "weighted_f1", "macro_f1"),
    counts={"protocol": 1, "shots": 1, "seed": 0, "n_train": 1, "n_test": 1, "image_size": 1, "method_version": 0},
    outcome=("n_train", "n_test", "accuracy", "weighted_f1", "macro_f1"),
    flags=("transductive", "isolated"),
)
SCHEMA_VERSION = FIXED_K.version
ALONE_ROWS = 64  # test images of a checked seed asked again one at a time (a predict call each)
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


def run_fixed_k(
    task: Task,
    method,
    k: int,
    seeds,
    cache,
    config: BenchConfig | None = None,
    *,
    pools: FixedKPools | None = None,
    executor=None,
    progress: Progress = SILENT,
    label: str = "method",
    spec=None,
) -> list[dict]:
    """Run a FewShotMethod (prepare once, then per seed fit on the K-per-class draw and predict the whole test
    pool); one dict per seed: seed, shots, n_train, n_test, accuracy, weighted_f1, macro_f1, seconds, draw and
    capped (fixed_k_draw's, the capped classes joined by `|`). `config`: the backbone, image size, device and
    cap (FixedKConfig; None: the defaults).

    The method is prepared on a copy of the task whose base pool is `protocol_base` and whose target is the
    test pool, so that nothing it pre-trains on is drawn or scored. `pools`: fixed_k_pools(task) where the
    caller has them. With `spec` (the runner.MethodSpec that made `method`), the first and last seed are
    asked again (check_seeds_again) and a method whose answers change fails before any row is made.
    """
    config = config or FixedKConfig(methods=[])
    pools = pools or fixed_k_pools(task)
    cap = getattr(config, "cap", False)
    draw = fixed_k_draw(task, k, cap, pools)
    sets = fixed_k_sets(task, k, seeds, cap, pools)
    view = Task(
        task.name,
        f"{task.description} (fixed-K protocol)",
        task.table,
        protocol_base(task, pools),
        pools.test,
        source=task.source,
    )
    handles = RowHandles.of_table(task.table)
    prepared_by(executor, method, view, cache, config, 0, progress, handles)
    n_classes = len(pools.classes)
    blind = [s.blind(handles) for s in sets]  # all that fit and predict see, here or on a Ray worker
    if executor is not None:  # chunks of seeds on its workers (benchmark/executors.py), in seed order
        extra = {"draw_tag": DRAW_TAG, "chunk": PREDICT_CHUNK} if hasattr(executor, "prepare") else {}
        answers = executor.seed_answers(fixed_k_answers, method, k, list(seeds), blind, n_classes, label, **extra)
    else:
        answers = fixed_k_answers(method, k, seeds, blind, n_classes)
    if spec is not None and answer_checks.checkable(executor):
        asked = answer_checks.Asked(spec, method, view, cache, config, handles)
        check_seeds_again(asked, k, answers, blind, n_classes, executor, progress)
    rows = [
        {
            "seed": seed,
            "shots": int(k),
            "n_train": len(s.train_idx),
            "n_test": len(s.test_idx),
            **score_fixed_k(s.test_y, in_test_order(scores, s.test_order(handles)), n_classes),
            "seconds": round(seconds, 6),
        }
        for (seed, scores, seconds), s in zip(answers, sets)
    ]
    return [{**row, "draw": draw.draw, "capped": "|".join(draw.capped)} for row in rows]


def check_seeds_again(
    asked: answer_checks.Asked, k: int, answers: list, blind: list, n_classes: int, executor, progress
) -> None:
    """benchmark/answer_checks.py's "alone" on the first and last seed answered, for a method that says it is
    inductive: ALONE_ROWS of their test rows, each asked on its own, get the scores they got in the pool. (Its
    "again" is not asked: the draws come from the train pool and are scored on the disjoint test pool, so
    remembering earlier seeds' draws labels no test image.)"""
    from benchmark.sandbox import fixedk_request

    if getattr(asked.method, "transductive", False):
        return
    requests, expected = {}, {}
    for j in sorted({0, len(answers) - 1}):
        (seed, scores, _), s = answers[j], blind[j]
        rows = answer_checks.rows_to_ask(len(s.test_idx), ALONE_ROWS, seed, k)
        expected[seed] = np.asarray(scores)[rows]
        requests[seed] = fixedk_request(s, k, seed, n_classes, 1, DRAW_TAG, s.test_idx[rows])
    again = answer_checks.answered_again(asked, 0, requests, executor, progress)  # prepared with seed 0
    device = asked.config.device
    changed = [seed for seed in requests if not answer_checks.same_alone(expected[seed], again[seed], device)]
    if changed:
        raise answer_checks.refused(
            asked.spec.label, "alone", f"seed {changed[0]} at {k} shots", len(changed), len(requests)
        )
    progress.log(
        f"{asked.spec.label} {k}-shot: {ALONE_ROWS} test images of {len(requests)} seeds answered again, each on its own:"
        " the same answers"
    )


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
        method.fit(
            s.train_idx.copy(), s.train_y.copy(), n_classes, np.random.default_rng([int(seed), int(k), DRAW_TAG, 1])
        )
        chunk = len(s.test_idx) if getattr(method, "transductive", False) else PREDICT_CHUNK  # its query: the pool
        scores = np.concatenate(
            [method.predict(s.test_idx[i : i + chunk].copy()) for i in range(0, len(s.test_idx), max(chunk, 1))]
        )
        answers.append((int(seed), scores, time.perf_counter() - started))
    return answers


def seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def summarize_over_seeds(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (shots, method): accuracy and weighted-F1 mean with 95% CI over seeds, seeds, seconds (fit and
    predict, summed over the seeds), n_train and n_test."""
    rows = rows.assign(capped=rows["capped"].astype(object).fillna("").astype(str), draw=rows["draw"].astype(str))
    return summarize(
        rows,
        ["shots", "method"],
        ("accuracy", "weighted_f1"),
        count="seeds",
        unique="seed",
        extra={
            "seconds": ("seconds", "sum"),
            "n_train": ("n_train", "max"),
            "n_test": ("n_test", "max"),
            "draw": ("draw", "max"),
            "capped": ("capped", "max"),
            "transductive": ("transductive", "max"),
        },
    )
