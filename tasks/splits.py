"""Base/target partitions of a dataset: scene-disjoint ("region transfer") or class-disjoint."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


def scene_split(
    labels: np.ndarray, groups: np.ndarray, seed: int, n_folds: int = 5, target_folds: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """(base, target) indices: each class divides about (n_folds - target_folds) : target_folds while no
    group is on both sides. StratifiedGroupKFold balances class proportions across folds, which a plain
    random split of groups does not (landforms cluster in few scenes)."""
    labels = np.asarray(labels)
    groups = np.asarray(groups, dtype=object).astype(str)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # classes with fewer groups than folds are expected
        warnings.simplefilter("ignore", UserWarning)
        folds = [test for _, test in splitter.split(np.zeros(len(labels)), labels, groups)]
    # Of the fold combinations, keep the one whose worst class is closest to the wanted fraction: a class
    # concentrated in a few large scenes is otherwise left far off (HiRISE dark dunes: 18% instead of 40%).
    wanted = target_folds / n_folds
    totals = np.bincount(labels, minlength=labels.max() + 1)
    present = totals > 0

    def worst_deviation(combo):
        idx = np.concatenate([folds[i] for i in combo])
        share = np.bincount(labels[idx], minlength=len(totals))[present] / totals[present]
        return np.abs(share - wanted).max()

    best = min(itertools.combinations(range(n_folds), target_folds), key=worst_deviation)
    target = np.sort(np.concatenate([folds[i] for i in best]))
    base = np.setdiff1d(np.arange(len(labels)), target)
    return base, target


def class_split(labels: np.ndarray, class_names, target_classes) -> tuple[np.ndarray, np.ndarray]:
    """(base, target) indices for a fixed class-disjoint split, target classes given by name."""
    target_ids = [list(class_names).index(name) for name in target_classes]
    in_target = np.isin(np.asarray(labels), target_ids)
    return np.flatnonzero(~in_target), np.flatnonzero(in_target)


def validation_split(
    labels: np.ndarray,
    groups: np.ndarray,
    base: np.ndarray,
    target: np.ndarray,
    seed: int,
    n_folds: int = 5,
    fills: tuple[tuple[int, int], ...] = ((1, 1), (5, 15)),
    max_share: float = 1 / 3,
) -> tuple[np.ndarray, np.ndarray]:
    """(pre-training, validation) table indices, both inside `base`: the slice that settings are chosen on.

    Where the task is class-disjoint (no target class among the base classes), whole base classes are held
    out, as many in proportion as the task holds out for its target (at least 2). Otherwise one of `n_folds`
    scene-disjoint folds of the base pool (`scene_split`, so each class keeps about its share); then, for each
    (K, Q) of `fills` in turn, a class that can make K-shot Q-query scene-disjoint support/query parts in the
    base pool but not in the slice gets more of its scenes, smallest first, until it can or the slice would
    pass `max_share` of the base pool (landforms cluster in few scenes: HiRISE's bright dunes lie in 7 base
    scenes, and no fold of five holds a 5-shot 15-query split of them). Either way
    the pre-training pool leaves out every row that shares a scene (group) with the slice, so validation
    episodes are scene-disjoint from what a method pre-trains on, as target episodes are. Of the target pool
    only its class ids are read."""
    labels = np.asarray(labels)
    groups = np.asarray(groups, dtype=object).astype(str)
    base = np.sort(np.asarray(base, dtype=np.int64))
    base_labels, base_groups = labels[base], groups[base]
    base_classes = np.unique(base_labels)
    target_classes = np.unique(labels[np.asarray(target, dtype=np.int64)])
    if not len(np.intersect1d(base_classes, target_classes)):
        in_validation = held_out_classes(base_labels, base_classes, target_classes, seed)
    else:
        in_validation = held_out_scenes(labels, groups, base, seed, n_folds, fills, max_share)
    if in_validation is None:
        return base, base[:0]
    validation = base[in_validation]
    in_validation_scene = np.isin(base_groups, np.unique(base_groups[in_validation]))
    return base[~in_validation_scene], validation


def held_out_classes(
    base_labels: np.ndarray, base_classes: np.ndarray, target_classes: np.ndarray, seed: int
) -> np.ndarray | None:
    """validation_split's slice of a class-disjoint task, as a mask over the base rows: whole base classes, as
    many in proportion as the task holds out for its target (at least 2); None where the base pool cannot
    spare 2 classes."""
    share = len(target_classes) / (len(target_classes) + len(base_classes))
    n_held = min(max(2, round(len(base_classes) * share)), len(base_classes) - 1)
    if n_held < 2:
        return None
    held = np.random.default_rng(seed).choice(base_classes, size=n_held, replace=False)
    return np.isin(base_labels, held)


def held_out_scenes(
    labels: np.ndarray,
    groups: np.ndarray,
    base: np.ndarray,
    seed: int,
    n_folds: int,
    fills: tuple[tuple[int, int], ...],
    max_share: float,
) -> np.ndarray | None:
    """validation_split's slice of a task whose classes meet, as a mask over the (sorted) `base` rows: one
    scene-disjoint fold, grown by `grow_for_fills`; None where the base pool has fewer than 2 scenes."""
    base_labels, base_groups = labels[base], groups[base]
    n_groups = len(np.unique(base_groups))
    if n_groups < 2:
        return None
    _, held = scene_split(base_labels, base_groups, seed=seed, n_folds=min(n_folds, n_groups), target_folds=1)
    chosen = set(base_groups[held])
    grow_for_fills(labels, groups, base, chosen, fills, max_share)
    chosen = np.array(sorted(chosen), dtype=object)
    return np.isin(base_groups, chosen)


def grow_for_fills(
    labels: np.ndarray,
    groups: np.ndarray,
    base: np.ndarray,
    chosen: set,
    fills: tuple[tuple[int, int], ...],
    max_share: float,
) -> None:
    """In place: add to `chosen` (the slice's scenes) more scenes of each class that can fill a (K, Q) of
    `fills` in the base pool but not in the slice, smallest first, until it can or the slice would pass
    `max_share` of the base pool."""
    from tasks.episodes import PoolIndex

    base_labels, base_groups = labels[base], groups[base]
    whole = PoolIndex(labels, groups, base)
    for k, q in fills:
        for c in whole.eligible(k, q):
            mine = base_groups[base_labels == c]
            sizes = {g: int((mine == g).sum()) for g in np.unique(mine)}
            spare = sorted((g for g in sizes if g not in chosen), key=lambda g: (sizes[g], g))
            # a class's last scene outside the slice stays there: pre-training keeps some of every class;
            # and the slice stops growing at `max_share` of the base pool
            while len(spare) > 1 and not PoolIndex(
                labels, groups, base[np.isin(base_groups, list(chosen))]
            ).class_can_fill(int(c), k, q):
                if np.isin(base_groups, list(chosen | {spare[0]})).sum() > max_share * len(base):
                    break
                chosen.add(spare.pop(0))
