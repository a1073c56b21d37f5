"""Base/target splits (scene-disjoint, class-disjoint) and the fixed-K protocol's pools and draws."""

import numpy as np
import pytest
from fakes import domars16k_like, grouped_table, hirise_v1_like
from sklearn.metrics import f1_score

from benchmark.fixedk import FixedKConfig, run_fixed_k
from common.errors import UserError
from methods.base import FewShotMethod
from methods.cache import Cache
from methods.registry import create_method
from tasks.datasets import load_dataset
from tasks.handles import RowHandles
from tasks.protocols import fixed_k_pools, fixed_k_sets, protocol_base
from tasks.registry import load_task
from tasks.splits import class_split, scene_split


@pytest.mark.parametrize("seed", range(5))
def test_scene_split_is_group_disjoint_and_complete(seed):
    table = grouped_table(n_classes=5, n_groups=40, seed=seed)
    base, target = scene_split(table.labels, table.groups, seed=seed)
    assert not set(table.groups[base]) & set(table.groups[target])
    assert np.array_equal(np.sort(np.concatenate([base, target])), np.arange(len(table)))
    assert 0.25 < len(target) / len(table) < 0.55


def test_scene_split_halves():
    table = grouped_table(n_classes=4, n_groups=60, seed=11, classes_per_group=(1, 1))
    base, target = scene_split(table.labels, table.groups, seed=0, n_folds=4, target_folds=2)
    assert not set(table.groups[base]) & set(table.groups[target])
    share = np.bincount(table.labels[target]) / np.bincount(table.labels)
    assert np.all(np.abs(share - 0.5) < 0.15), share


def test_class_split():
    labels = np.array([0, 1, 2, 0, 1, 2])
    base, target = class_split(labels, ("a", "b", "c"), ("c",))
    assert target.tolist() == [2, 5] and base.tolist() == [0, 1, 3, 4]


@pytest.mark.slow
def test_scene_split_on_real_hirise(real_data_dir):
    table = load_dataset("hirise-v1", real_data_dir)
    base, target = scene_split(table.labels, table.groups, seed=0)
    assert not set(table.groups[base]) & set(table.groups[target])
    totals = np.bincount(table.labels)
    share = np.bincount(table.labels[target], minlength=len(totals)) / totals
    assert np.all(np.abs(share - 0.4) < 0.1), dict(zip(table.class_names, share.round(3)))
    big = totals >= 100  # classes with many scenes come out close to 40%
    assert np.all(np.abs(share[big] - 0.4) < 0.03), dict(zip(table.class_names, share.round(3)))


# --- fixed-K protocol -----------------------------------------------------------------------------------------


@pytest.fixture
def domars_task(tmp_path):
    return load_task("domars16k", domars16k_like(tmp_path, products=4, per_product=2))


def test_fixed_k_uses_the_official_splits(domars_task):
    table = domars_task.table
    pools = fixed_k_pools(domars_task)
    assert pools.source == "splits"
    assert set(table.splits[pools.train]) == {"train"} and set(table.splits[pools.test]) == {"test"}
    assert set(table.splits[protocol_base(domars_task, pools)]) == {"val"}
    sets = fixed_k_sets(domars_task, 3, seeds=[0, 1, 2])
    assert len(sets) == 3
    for s in sets:
        assert np.array_equal(s.test_idx, pools.test)  # always the whole test split
        assert np.array_equal(table.labels[s.test_idx], pools.classes[s.test_y])
        assert np.array_equal(table.labels[s.train_idx], pools.classes[s.train_y])
        assert np.bincount(s.train_y).tolist() == [3] * len(pools.classes)
        assert len(set(s.train_idx.tolist())) == len(s.train_idx)
        assert set(table.splits[s.train_idx]) == {"train"}


def test_fixed_k_draws_are_deterministic_per_seed_and_nested_in_k(domars_task):
    a, b = fixed_k_sets(domars_task, 3, [5, 6])
    again = fixed_k_sets(domars_task, 3, [6, 5])
    assert np.array_equal(a.train_idx, again[1].train_idx) and np.array_equal(b.train_idx, again[0].train_idx)
    assert not np.array_equal(a.train_idx, b.train_idx)
    small = fixed_k_sets(domars_task, 2, [5])[0]
    n_classes = len(fixed_k_pools(domars_task).classes)
    for c in range(n_classes):
        assert np.array_equal(small.train_idx[small.train_y == c], a.train_idx[a.train_y == c][:2])


def test_fixed_k_too_many_shots(domars_task):
    with pytest.raises(UserError, match=r"needs 9 training images per class.*use --shots 8 or fewer"):
        fixed_k_sets(domars_task, 9, [0])  # 4 products x 2 tiles = 8 training images per class


def test_fixed_k_scene_halves_of_the_target_pool(tmp_path):
    data = hirise_v1_like(tmp_path, per_class={0: 40, 1: 40, 2: 40}, groups=10)
    task = load_task("hirise-regions", data)
    pools = fixed_k_pools(task)
    assert pools.source == "scene halves"
    assert np.array_equal(np.sort(np.concatenate([pools.train, pools.test])), np.sort(task.target))
    groups = task.table.groups
    assert not set(groups[pools.train]) & set(groups[pools.test])
    assert np.array_equal(protocol_base(task, pools), np.sort(task.base))
    for s in fixed_k_sets(task, 2, [0, 1]):
        assert not set(groups[s.train_idx]) & set(groups[s.test_idx])


class AlwaysFirstClass(FewShotMethod):
    """Predicts class 0 for everything; records what it was given."""

    def prepare(self, ctx):
        super().prepare(ctx)
        self.base, _ = ctx.base_pool()

    def fit(self, support_idx, support_y, n_way, rng):
        self.n_way = n_way
        self.fits = getattr(self, "fits", 0) + 1

    def predict(self, query_idx):
        scores = np.zeros((len(query_idx), self.n_way))
        scores[:, 0] = 1.0
        return scores


def test_run_fixed_k_scores_the_whole_test_split(domars_task, tmp_path):
    method = AlwaysFirstClass()
    rows = run_fixed_k(domars_task, method, 2, [0, 1, 2], Cache(tmp_path / "cache"))
    pools = fixed_k_pools(domars_task)
    handles = RowHandles.of_table(domars_task.table)  # what the method addresses rows by
    assert np.array_equal(method.base, handles.of_rows(protocol_base(domars_task, pools))) and method.fits == 3
    test_y = fixed_k_sets(domars_task, 2, [0])[0].test_y
    pred = np.zeros_like(test_y)
    assert [r["seed"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert r["n_test"] == len(pools.test) and r["n_train"] == 2 * len(pools.classes)
        assert r["accuracy"] == pytest.approx(np.mean(test_y == 0))
        assert r["weighted_f1"] == pytest.approx(f1_score(test_y, pred, average="weighted", zero_division=0))


def test_run_fixed_k_with_protonet_on_colour_coded_classes(domars_task, tmp_path):
    rows = run_fixed_k(
        domars_task,
        create_method("protonet"),
        2,
        [0, 1],
        Cache(tmp_path / "cache"),
        FixedKConfig(methods=[], image_size=32),
    )
    for r in rows:  # chance: 1/3; the test images are other images than the training ones, not copies of them
        assert r["accuracy"] > 0.8 and r["weighted_f1"] > 0.8, r
