"""Fake per-episode result rows in the results CSV schema, for leaderboard/report tests (no real runs)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from benchmark.results import COLUMNS, SCHEMA_VERSION
from benchmark.scoring import join_labels

CLASSES = ("crater", "dark dune", "slope streak", "bright dune", "impact ejecta", "swiss cheese", "spider", "other")


def manifest_of(task: str, ways: int, shots: int, queries: int, seed: int) -> str:
    return hashlib.sha256(f"{task}|{ways}|{shots}|{queries}|{seed}".encode()).hexdigest()[:16]


def fake_rows(
    methods: dict[str, float],
    shots=(1, 5),
    episodes: int = 40,
    seed: int = 0,
    ways: int = 5,
    queries: int = 15,
    task: str = "fake-task",
    noise: float = 0.05,
    episode_sd: float = 0.1,
    class_bias: dict[str, float] | None = None,
    transductive=(),
) -> pd.DataFrame:
    """Rows for every method x shots x episode. An episode has a shared difficulty (so methods are paired), each
    method a mean `methods[name]` (+2 points per extra shot) and its own noise; per-class recalls are multiples
    of 1/queries whose mean is the episode's accuracy. Methods named in `transductive` are marked so."""
    rng = np.random.default_rng(seed)
    class_bias = class_bias or {}
    rows = []
    for k in shots:
        manifest = manifest_of(task, ways, k, queries, seed)
        for e in range(episodes):
            classes = rng.choice(len(CLASSES), ways, replace=False)
            difficulty = rng.normal(0, episode_sd)
            for name, mean in methods.items():
                p = mean + 0.02 * (k - 1) + difficulty + rng.normal(0, noise, ways)
                p += np.array([class_bias.get(CLASSES[c], 0.0) for c in classes])
                correct = rng.binomial(queries, np.clip(p, 0, 1))
                recall = correct / queries
                rows.append(
                    {
                        "schema": SCHEMA_VERSION,
                        "task": task,
                        "source": "",
                        "data": "d0",
                        "method": name,
                        "method_version": 1,
                        "config": json.dumps({"x": 1}),
                        "shots": k,
                        "ways": ways,
                        "queries": queries,
                        "seed": seed,
                        "manifest": manifest,
                        "episode": e,
                        "classes": join_labels(CLASSES[c] for c in classes),
                        "accuracy": float(recall.mean()),
                        "macro_f1": float(np.clip(recall.mean() - 0.01, 0, 1)),
                        "class_accuracy": "|".join(f"{a:.6g}" for a in recall),
                        "n_query": ways * queries,
                        "seconds": 0.01,
                        "backbone": "efficientnet_lite0",
                        "image_size": 128,
                        "preprocessing": "features1+decoder1",
                        "git_commit": "abc",
                        "versions": "marsfsl=0.1.0",
                        "timestamp": "2025-01-01T00:00:00+00:00",
                        "weights": "w0",
                        "transductive": int(name in transductive),
                        "isolated": 0,
                    }
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def write_csv(frame: pd.DataFrame, path) -> None:
    frame.to_csv(path, index=False, lineterminator="\n")
