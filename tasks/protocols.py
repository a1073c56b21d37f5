"""The fixed-K protocol (as Mars-Bench's few-shot evaluation): K labelled images per class, the whole test set.

The protocol as data: which images are drawn and scored (running methods on them is the harness's job,
benchmark/fixedk.py). Unlike N-way episodes, every class takes part at once: a method is fitted on K images of each class drawn
from a training pool and scored on every image of a test pool, once per seed. The pools:
- a table with `train` and `test` splits (DoMars16k's official split): those splits, as published;
- otherwise the task's target pool, cut by scene into two halves (`scene_split` with 4 folds, 2 of them
  test: the best balanced of the 6 fold pairs), so no source scene is on both sides.
The halves are fixed (split seed 0); a seed only changes which K images are drawn. Each class's images
are drawn from their own generator, seeded by (seed, class): the K=5 draw is the first five of the K=10
draw, so a shots curve compares nested training sets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from tasks.errors import UserError
from tasks.registry import SPLIT_SEED, Task
from tasks.splits import scene_split

PROTOCOL_VERSION = 1
HALF_FOLDS, HALF_TEST_FOLDS = 4, 2
DRAW_TAG = 4211  # separates these generators from the episode sampler's


class FixedKSet(NamedTuple):
    """One seed's draw: table indices and protocol labels (0..C-1, positions in FixedKPools.classes)."""

    train_idx: np.ndarray
    train_y: np.ndarray
    test_idx: np.ndarray
    test_y: np.ndarray


@dataclass(frozen=True, eq=False)
class FixedKPools:
    train: np.ndarray  # table indices the K images per class are drawn from
    test: np.ndarray  # table indices every method is scored on
    classes: np.ndarray  # table label ids taking part, in protocol label order
    source: str  # "splits" (the table's train/test) or "scene halves" (of the task's target pool)


def fixed_k_pools(task: Task) -> FixedKPools:
    table = task.table
    splits = table.splits.astype(str)
    if {"train", "test"} <= set(splits):
        train, test, source = np.flatnonzero(splits == "train"), np.flatnonzero(splits == "test"), "splits"
    else:
        pool = np.asarray(task.target, dtype=np.int64)
        a, b = scene_split(table.labels[pool], table.groups[pool], seed=SPLIT_SEED, n_folds=HALF_FOLDS,
                           target_folds=HALF_TEST_FOLDS)
        train, test, source = pool[a], pool[b], "scene halves"
    classes = np.unique(table.labels[np.concatenate([train, test])])
    return FixedKPools(train=train, test=test, classes=classes, source=source)


def protocol_base(task: Task, pools: FixedKPools) -> np.ndarray:
    """What a method may pre-train on under this protocol: the task's base pool less every image the protocol
    draws from or scores on (for DoMars16k, whose base is train + val, that leaves val)."""
    return np.setdiff1d(task.base, np.concatenate([pools.train, pools.test]))


def fixed_k_sets(task: Task, k: int, seeds, pools: FixedKPools | None = None) -> list[FixedKSet]:
    """One (train_idx, train_y, test_idx, test_y) per seed; raises a one-line UserError if a class has fewer
    than K training images. `pools`: fixed_k_pools(task) where the caller has them."""
    if int(k) < 1:
        raise UserError(f"--shots must be a positive integer, got {k}")
    pools = pools or fixed_k_pools(task)
    labels = task.table.labels
    by_class = [np.sort(pools.train[labels[pools.train] == c]) for c in pools.classes]
    counts = [len(x) for x in by_class]
    short = [f"{task.class_names[c]} ({n})" for c, n in zip(pools.classes, counts) if n < k]
    if short:
        verb = "has" if len(short) == 1 else "have"
        advice = f"use --shots {min(counts)} or fewer" if min(counts) >= 1 else "use another task"
        raise UserError(f"task {task.name}: fixed-K with {k} shots needs {k} training images per class, but "
                        f"{', '.join(short)} {verb} fewer in its training {pools.source}; {advice}")
    position = {int(c): i for i, c in enumerate(pools.classes)}
    test_y = np.array([position[int(c)] for c in labels[pools.test]], dtype=np.int64)
    sets = []
    for seed in seeds:
        train_idx = np.concatenate([
            np.random.default_rng(np.random.SeedSequence([int(seed), int(c), DRAW_TAG])).permutation(imgs)[:k]
            for c, imgs in zip(pools.classes, by_class)])
        sets.append(FixedKSet(train_idx=train_idx.astype(np.int64),
                              train_y=np.repeat(np.arange(len(pools.classes)), k),
                              test_idx=pools.test.copy(), test_y=test_y))
    return sets


