"""The fixed-K protocol (as Mars-Bench's few-shot evaluation): K labelled images per class, the whole test set.

Unlike N-way episodes, every class takes part at once: a method is fitted on K images of each class drawn
from a training pool and scored on every image of a test pool, once per seed. The pools:
- a table with `train` and `test` splits (DoMars16k's official split): those splits, as published;
- otherwise the task's target pool, cut by scene into two halves (`scene_split` with 4 folds, 2 of them
  test: the best balanced of the 6 fold pairs), so no source scene is on both sides.
The halves are fixed (split seed 0); a seed only changes which K images are drawn. Each class's images
are drawn from their own generator, seeded by (seed, class): the K=5 draw is the first five of the K=10
draw, so a shots curve compares nested training sets. Two exceptions, both as Mars-Bench does:
- a `marsbench:` set with its own `few_shot/<K>_shot.csv` trains on that list's `train` rows, the same
  for every seed (a class with fewer than K training images is then all in the list, and named as capped);
- with `cap`, a class with fewer than K training images gives all it has (else that K is refused), and the
  draw names the capped classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from common.errors import UserError
from tasks.registry import SPLIT_SEED, Task
from tasks.splits import scene_split

PROTOCOL_VERSION = 1
HALF_FOLDS, HALF_TEST_FOLDS = 4, 2
DRAW_TAG = 4211  # separates these generators from the episode sampler's


class BlindFixedKSet(NamedTuple):
    """One seed's draw as a method may see it: its training rows and labels and the test rows, in the test pool's
    order (table order, never class by class); not the test labels."""

    train_idx: np.ndarray
    train_y: np.ndarray
    test_idx: np.ndarray


class FixedKSet(NamedTuple):
    """One seed's draw: table indices and protocol labels (0..C-1, positions in FixedKPools.classes)."""

    train_idx: np.ndarray
    train_y: np.ndarray
    test_idx: np.ndarray
    test_y: np.ndarray

    def blind(self, handles=None) -> BlindFixedKSet:
        """What fitting and predicting need (copies): whoever holds this set scores with its test_y. With
        `handles` (tasks.handles.RowHandles), rows are handles and the test rows are in ascending handle order
        (`test_order` puts scores answered in that order back in test_idx's)."""
        if handles is None:
            return BlindFixedKSet(self.train_idx.copy(), self.train_y.copy(), self.test_idx.copy())
        return BlindFixedKSet(
            handles.of_rows(self.train_idx), self.train_y.copy(), np.sort(handles.of_rows(self.test_idx))
        )

    def test_order(self, handles) -> np.ndarray:
        """For each row of test_idx, its position in blind(handles).test_idx."""
        return np.argsort(np.argsort(handles.of_rows(self.test_idx), kind="stable"), kind="stable")


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
        a, b = scene_split(
            table.labels[pool], table.groups[pool], seed=SPLIT_SEED, n_folds=HALF_FOLDS, target_folds=HALF_TEST_FOLDS
        )
        train, test, source = pool[a], pool[b], "scene halves"
    classes = np.unique(table.labels[np.concatenate([train, test])])
    return FixedKPools(train=train, test=test, classes=classes, source=source)


def protocol_base(task: Task, pools: FixedKPools) -> np.ndarray:
    """What a method may pre-train on under this protocol: the task's base pool less every image the protocol
    draws from or scores on (for DoMars16k, whose base is train + val, that leaves val)."""
    return np.setdiff1d(task.base, np.concatenate([pools.train, pools.test]))


def pretraining_pool(task: Task, pools: FixedKPools) -> str:
    """What `protocol_base` is, in words, for the table's header."""
    base = protocol_base(task, pools)
    if task.source:
        return f"pre-training pool: --source {task.source} ({len(base)} images)"
    if not len(base):
        return "pre-training pool: none (every image of the task is drawn from or scored)"
    if pools.source == "splits":
        splits = sorted({str(s) for s in task.table.splits[base]})
        return f"pre-training pool: the {' + '.join(splits)} split ({len(base)} images), neither drawn from nor scored"
    return f"pre-training pool: the task's base pool ({len(base)} images), outside the two scene halves"


class FixedKDraw(NamedTuple):
    """How the K training images per class are chosen for one K: `draw` is "random" (K per class, seeded) or
    "marsbench-list" (Mars-Bench's own few_shot/<K>_shot.csv, the same for every seed); `capped` names the
    classes that had fewer than K training images and gave all they had (only with cap=True)."""

    draw: str
    capped: tuple[str, ...]


def marsbench_list(task: Task, k: int):
    """Mars-Bench's K-shot training list (tasks.datasets.marsbench.KShotList: table rows, capped classes) when the
    task is a `marsbench:` set that has one, else None."""
    plain = getattr(task, "plain", None) or task  # a --source task keeps the set's rows first, same indices
    root = getattr(plain.table, "marsbench_root", None)
    if root is None:
        return None
    from tasks.datasets.marsbench import few_shot_train

    return few_shot_train(plain.table, root, k)


def fixed_k_draw(task: Task, k: int, cap: bool = False, pools: FixedKPools | None = None) -> FixedKDraw:
    """What fixed_k_sets will draw at K; raises the one-line UserError for a class short of K images unless
    `cap` (then such a class gives every training image it has, as Mars-Bench's K-shot lists do)."""
    if int(k) < 1:
        raise UserError(f"--shots must be a positive integer, got {k}")
    listed = marsbench_list(task, k)
    if listed is not None:  # its classes short of K are Mars-Bench's own caps: named, not refused
        return FixedKDraw("marsbench-list", listed.capped)
    pools = pools or fixed_k_pools(task)
    labels = task.table.labels
    counts = [int((labels[pools.train] == c).sum()) for c in pools.classes]
    short = [(task.class_names[c], n) for c, n in zip(pools.classes, counts) if n < k]
    if short and not cap:
        verb = "has" if len(short) == 1 else "have"
        advice = f"use --shots {min(counts)} or fewer" if min(counts) >= 1 else "use another task"
        raise UserError(
            f"task {task.name}: fixed-K with {k} shots needs {k} training images per class, but "
            f"{', '.join(f'{name} ({n})' for name, n in short)} {verb} fewer in its training "
            f"{pools.source}; {advice}, or --cap to take all of a smaller class"
        )
    empty = [name for name, n in short if n == 0]
    if empty:
        raise UserError(
            f"task {task.name}: {', '.join(empty)} has no training image in its training {pools.source}; "
            "use another task"
        )
    return FixedKDraw("random", tuple(f"{name} ({n})" for name, n in short))


def fixed_k_sets(task: Task, k: int, seeds, cap: bool = False, pools: FixedKPools | None = None) -> list[FixedKSet]:
    """One (train_idx, train_y, test_idx, test_y) per seed; raises a one-line UserError if a class has fewer
    than K training images, unless `cap` (at most K per class). A `marsbench:` set with Mars-Bench's own
    few_shot/<K>_shot.csv trains on that list, the same for every seed (the seed then only seeds the method).
    `pools`: fixed_k_pools(task) where the caller has them."""
    pools = pools or fixed_k_pools(task)
    draw = fixed_k_draw(task, k, cap, pools)
    labels = task.table.labels
    position = {int(c): i for i, c in enumerate(pools.classes)}
    test_y = np.array([position[int(c)] for c in labels[pools.test]], dtype=np.int64)
    listed = marsbench_list(task, k).rows if draw.draw == "marsbench-list" else None
    if listed is not None:
        unknown = sorted({task.class_names[c] for c in labels[listed]} - {task.class_names[c] for c in pools.classes})
        if unknown:
            raise UserError(
                f"task {task.name}: Mars-Bench's {k}-shot list holds class(es) {', '.join(unknown)} "
                "that the test split lacks"
            )
        order = np.argsort([position[int(c)] for c in labels[listed]], kind="stable")
        train_idx = listed[order]
        train_y = np.array([position[int(c)] for c in labels[train_idx]], dtype=np.int64)
        return [
            FixedKSet(train_idx=train_idx.copy(), train_y=train_y.copy(), test_idx=pools.test.copy(), test_y=test_y)
            for _ in seeds
        ]
    by_class = [np.sort(pools.train[labels[pools.train] == c]) for c in pools.classes]
    sets = []
    for seed in seeds:
        drawn = [
            np.random.default_rng(np.random.SeedSequence([int(seed), int(c), DRAW_TAG])).permutation(imgs)[:k]
            for c, imgs in zip(pools.classes, by_class)
        ]
        sets.append(
            FixedKSet(
                train_idx=np.concatenate(drawn).astype(np.int64),
                train_y=np.repeat(np.arange(len(pools.classes)), [len(d) for d in drawn]),
                test_idx=pools.test.copy(),
                test_y=test_y,
            )
        )
    return sets
