"""Validation slices: inside the base pool, never touching the target pool, scene-disjoint from what methods
pre-train on (class-disjoint where the task is), reproducible; `bench run --split validation` draws there."""

import numpy as np
import pandas as pd
import pytest
from fakes import csv_like, grouped_table

from benchmark.cli import main
from benchmark.protocols.episodes import run_benchmark
from benchmark.runner import MethodSpec, RunConfig
from methods.base import Context, FewShotMethod
from tasks.episodes import EpisodeSet
from tasks.handles import RowHandles
from tasks.registry import Task, load_task, region_task
from tasks.splits import class_split


def region(seed):
    return region_task("grouped", grouped_table(n_classes=5, n_groups=60, seed=seed), "generated")


def classes(seed):
    table = grouped_table(n_classes=8, n_groups=60, seed=seed)
    base, target = class_split(table.labels, table.class_names, ("class5", "class6", "class7"))
    return Task("grouped-classes", "generated", table, base, target)


def own_split(tmp_path):
    csv = csv_like(tmp_path / "csv", classes=("a", "b", "c"), groups=12, per_group=2, target_groups=4)
    return load_task(f"csv:{csv}", tmp_path)


def check_slice(task: Task) -> Task:
    val = task.validation()
    groups = task.table.groups.astype(str)
    assert len(val.target) and len(val.base)
    assert set(val.target) <= set(task.base) and set(val.base) <= set(task.base)
    assert not set(val.target) & set(task.target)  # never the target pool
    assert not set(val.base) & set(task.target)
    assert not set(val.target) & set(val.base)
    assert not set(groups[val.target]) & set(groups[val.base])  # scene-disjoint from pre-training
    again = task.validation()  # fixed seed: the same slice every time
    assert np.array_equal(again.target, val.target) and np.array_equal(again.base, val.base)
    assert val.name == task.name + "@validation" and val.identity() != task.identity()
    return val


@pytest.mark.parametrize("seed", range(3))
def test_region_task_slice(seed):
    task = region(seed)
    val = check_slice(task)
    assert set(task.table.labels[val.target]) == set(task.table.labels[task.base])  # every base class, by scenes
    assert 0.1 < len(val.target) / len(task.base) <= 1 / 3


@pytest.mark.parametrize("seed", range(3))
def test_class_disjoint_task_holds_out_base_classes(seed):
    task = classes(seed)
    val = check_slice(task)
    labels = task.table.labels
    held, kept = set(labels[val.target]), set(labels[val.base])
    assert not held & kept and not held & set(labels[task.target])
    assert len(held) == 2  # 3 of 8 classes are the task's target: round(5 * 3 / 8) = 2 of the 5 base classes


def test_csv_with_its_own_split(tmp_path):
    task = own_split(tmp_path)
    check_slice(task)
    assert load_task(task.name + "@validation", tmp_path).identity() == task.validation().identity()


def test_target_labels_do_not_move_the_slice():
    task = region(0)
    table = task.table
    frame = table.frame.copy()
    labels = frame["label"].to_numpy().copy()
    target = np.asarray(task.target)
    labels[target] = np.random.default_rng(1).permutation(labels[target])
    frame["label"] = labels
    poisoned = Task(
        task.name,
        task.description,
        type(table)(name=table.name, frame=frame, class_names=table.class_names),
        task.base,
        task.target,
    )
    assert np.array_equal(poisoned.validation().target, task.validation().target)
    assert np.array_equal(poisoned.validation().base, task.validation().base)


def test_unknown_split_is_one_line():
    with pytest.raises(Exception, match="unknown split 'test'"):
        region(0).split("test")


class BasePoolProbe(FewShotMethod):
    """Records the base pool it was given; answers uniformly."""

    seen: list = []

    def prepare(self, ctx: Context) -> None:
        BasePoolProbe.seen.append(ctx.base_pool()[0])

    def fit(self, support_idx, support_y, n_way, rng):
        self.n_way = n_way

    def predict(self, query_idx):
        return np.zeros((len(query_idx), self.n_way))


@pytest.fixture
def probe(monkeypatch):
    """`--method test-base-pool-probe` runs BasePoolProbe, for this test only (the registry stays as it is)."""
    import benchmark.runner

    real = benchmark.runner.create_method
    monkeypatch.setattr(
        benchmark.runner,
        "create_method",
        lambda name, **options: BasePoolProbe() if name == "test-base-pool-probe" else real(name, **options),
    )
    BasePoolProbe.seen.clear()


def test_validation_runs_pretrain_without_the_slice_and_draw_from_it(tmp_path, monkeypatch, probe):
    monkeypatch.chdir(tmp_path)  # the default results file lies in ./runs
    csv = csv_like(tmp_path / "csv", classes=("a", "b", "c"), groups=12, per_group=2, target_groups=4)
    task = load_task(f"csv:{csv}", tmp_path)
    val = task.validation()
    config = RunConfig(
        methods=[MethodSpec("test-base-pool-probe")],
        task=f"csv:{csv}",
        shots=[1],
        data_dir=tmp_path,
        cache_dir=tmp_path / "cache",
        n_way=3,
        n_query=1,
        episodes=4,
        split="validation",
    )
    config.out = None
    BasePoolProbe.seen.clear()
    rows = run_benchmark(config)
    # pre-training pool: base minus the slice's scenes, as the handles the method addresses rows by
    assert np.array_equal(BasePoolProbe.seen[0], RowHandles.of_table(val.table).of_rows(val.base))
    assert set(rows["task"]) == {f"csv:{csv}@validation"} and len(rows) == 4
    path = config.results_path()
    assert path.name.endswith("-validation.csv")
    manifests = list((path.parent / "manifests").glob("*@validation*.npz"))
    assert len(manifests) == 1
    episodes = EpisodeSet.load(manifests[0])
    used = np.concatenate([episodes.support.ravel(), episodes.query.ravel()])
    assert set(used) <= set(val.target)
    # the same command draws the same episodes (and finds its rows done)
    assert np.array_equal(val.episodes(3, 1, 1, 4, 0).support, episodes.support)
    BasePoolProbe.seen.clear()
    again = run_benchmark(config)
    assert not BasePoolProbe.seen and again["accuracy"].tolist() == rows["accuracy"].tolist()


def test_bench_run_split_validation_cli(tmp_path, capsys, monkeypatch, probe):
    monkeypatch.chdir(tmp_path)
    csv = csv_like(tmp_path / "csv", classes=("a", "b", "c"), groups=12, per_group=2, target_groups=4)
    argv = [
        *"run --method test-base-pool-probe --task".split(),
        f"csv:{csv}",
        *"--shots 1 --ways 3 --queries 1 --episodes 3 --quiet --data-dir".split(),
        str(tmp_path),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    assert main(argv + ["--split", "validation"]) == 0
    assert main(argv) == 0
    files = sorted((p.name for p in (tmp_path / "runs").glob("*.csv")), key=len)
    assert len(files) == 2 and files[1] == files[0][: -len(".csv")] + "-validation.csv"
    target = pd.read_csv(tmp_path / "runs" / files[0])
    validation = pd.read_csv(tmp_path / "runs" / files[1])
    assert not set(target["task"]) & set(validation["task"])
    assert not set(target["manifest"]) & set(validation["manifest"])
