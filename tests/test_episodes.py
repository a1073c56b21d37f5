"""The episode sampler: scene-disjoint support and query, determinism, the eligibility rule, infeasible
requests."""

import itertools

import numpy as np
import pytest
from fakes import grouped_table

from common.errors import UserError
from tasks.datasets import table_from_rows
from tasks.episodes import EpisodeSet, PoolIndex
from tasks.registry import Task


def whole_table_task(table) -> Task:
    return Task(table.name, "test task", table, np.array([], dtype=np.int64), np.arange(len(table)))


@pytest.fixture(scope="module")
def task():
    table = grouped_table(n_classes=6, n_groups=18, seed=3)
    assert len(set(table.groups)) == 18
    # the point of the fake: scenes hold several landforms
    assert max(len(set(table.labels[table.groups == g])) for g in set(table.groups)) >= 3
    return whole_table_task(table)


@pytest.mark.parametrize("n_way,k,q", [(2, 1, 1), (3, 2, 3), (4, 1, 2), (5, 2, 2)])
def test_every_episode_is_scene_disjoint(task, n_way, k, q):
    labels, groups = task.table.labels, task.table.groups
    episodes = task.episodes(n_way, k, q, 60, seed=1)
    assert len(episodes) == 60
    for ep in episodes:
        support_groups, query_groups = set(groups[ep.support_idx]), set(groups[ep.query_idx])
        assert not support_groups & query_groups, f"episode {ep.index} shares scenes"
        assert len(set(ep.classes.tolist())) == n_way
        assert np.array_equal(labels[ep.support_idx], ep.classes[ep.support_y])
        assert np.array_equal(labels[ep.query_idx], ep.classes[ep.query_y])
        both = np.concatenate([ep.support_idx, ep.query_idx])
        assert len(set(both.tolist())) == len(both) == n_way * (k + q)
        assert np.isin(both, task.target).all()
        assert np.bincount(ep.support_y, minlength=n_way).tolist() == [k] * n_way
        assert np.bincount(ep.query_y, minlength=n_way).tolist() == [q] * n_way


def test_episodes_use_only_the_target_pool():
    table = grouped_table(n_classes=5, n_groups=20, seed=5)
    target = np.flatnonzero(np.isin(table.groups, [f"scene{g}" for g in range(0, 20, 2)]))
    task = Task("half", "", table, np.setdiff1d(np.arange(len(table)), target), target)
    eligible = task.target_index().eligible(1, 1)
    episodes = task.episodes(min(3, len(eligible)), 1, 1, 30, seed=0)
    assert np.isin(episodes.support, target).all() and np.isin(episodes.query, target).all()


def test_same_seed_same_digest_different_seed_differs(task):
    a = task.episodes(3, 2, 2, 20, seed=7)
    b = task.episodes(3, 2, 2, 20, seed=7)
    c = task.episodes(3, 2, 2, 20, seed=8)
    assert a.digest == b.digest
    assert np.array_equal(a.support, b.support) and np.array_equal(a.query, b.query)
    assert a.digest != c.digest
    assert not np.array_equal(a.support, c.support)


def test_prefix_property(task):
    long = task.episodes(3, 2, 2, 20, seed=4)
    short = task.episodes(3, 2, 2, 10, seed=4)
    assert np.array_equal(long.classes[:10], short.classes)
    assert np.array_equal(long.support[:10], short.support)
    assert np.array_equal(long.query[:10], short.query)
    assert long.stream == short.stream  # the stream, not its length, names the episodes


def test_manifest_round_trip_and_corruption(task, tmp_path):
    episodes = task.episodes(3, 1, 2, 5, seed=0)
    episodes.save(tmp_path / "m.npz")
    again = EpisodeSet.load(tmp_path / "m.npz")
    assert again.digest == episodes.digest
    with np.load(tmp_path / "m.npz") as z:
        parts = {k: z[k] for k in z.files}
    parts["query"] = parts["query"].copy()
    parts["query"][0, 0] += 1
    np.savez(tmp_path / "bad.npz", **parts)
    with pytest.raises(UserError, match="corrupt"):
        EpisodeSet.load(tmp_path / "bad.npz")


def brute_force_can_fill(sizes, k, q) -> bool:
    """Some subset of the class's groups holds >= k images and the rest >= q."""
    total = sum(sizes)
    return any(
        sum(subset) >= k and total - sum(subset) >= q
        for r in range(len(sizes) + 1)
        for subset in itertools.combinations(sizes, r)
    )


def test_class_can_fill_matches_brute_force():
    rng = np.random.default_rng(0)
    checked = positives = 0
    for _ in range(150):
        n = int(rng.integers(3, 40))
        labels = rng.integers(0, 3, n)
        groups = rng.integers(0, int(rng.integers(1, 8)), n)
        index = PoolIndex(labels, groups.astype(str), np.arange(n))
        for c in index.classes:
            sizes = [int(s) for s in np.bincount(groups[labels == c]) if s > 0]
            for k, q in itertools.product(range(1, 7), range(1, 7)):
                expected = brute_force_can_fill(sizes, k, q)
                assert index.class_can_fill(int(c), k, q) == expected, (sizes, k, q)
                checked += 1
                positives += expected
    assert checked > 2000 and 0.2 < positives / checked < 0.8  # both answers are exercised


def test_eligibility_counts_images_of_the_class_only():
    # group A: 5 images of class 0 and 5 of class 1; group B: 1 image of class 0. Class 0 can do k=5,q=1 only
    # by putting A on the support side; class 1 lives in one group and can never be split.
    labels = [0] * 5 + [1] * 5 + [0]
    groups = ["A"] * 10 + ["B"]
    index = PoolIndex(np.array(labels), np.array(groups), np.arange(11))
    assert index.class_can_fill(0, 5, 1) and index.class_can_fill(0, 1, 5)
    assert not index.class_can_fill(0, 5, 2)
    assert not index.class_can_fill(1, 1, 1)


def infeasible_task():
    # class 2 holds 3 images in two scenes (2 + 1): 1-shot 2-query works for it, 2-shot 2-query does not.
    labels, groups = [], []
    for c in (0, 1):
        for g in range(4):
            labels += [c] * 5
            groups += [f"s{c}{g}"] * 5
    labels += [2, 2, 2]
    groups += ["t0", "t0", "t1"]
    table = table_from_rows(
        "tiny", [f"/x/{i}.png" for i in range(len(labels))], labels, groups, ["dunes", "craters", "streaks"]
    )
    return whole_table_task(table)


def test_infeasible_request_suggests_alternatives():
    task = infeasible_task()
    with pytest.raises(UserError) as exc:
        task.episodes(3, 2, 2, 10, seed=0)
    message = str(exc.value)
    assert "\n" not in message
    assert "cannot make 3-way 2-shot 2-query episodes" in message
    assert "only 2 classes (dunes, craters)" in message
    assert "--ways 2" in message and "--shots 1 or fewer" in message
    # the alternatives it names do work
    assert len(task.episodes(2, 2, 2, 5, seed=0)) == 5
    episodes = task.episodes(3, 1, 2, 5, seed=0)
    assert all(2 in ep.classes for ep in episodes)


@pytest.mark.parametrize("bad", [dict(n_way=1), dict(n_shot=0), dict(n_query=0), dict(n_episodes=0)])
def test_non_positive_sizes_are_user_errors(task, bad):
    args = dict(n_way=2, n_shot=1, n_query=1, n_episodes=3, seed=0) | bad
    with pytest.raises(UserError):
        task.episodes(**args)


def test_episode_streams_do_not_depend_on_where_the_data_lies_or_its_file_times(tmp_path):
    """Results from two machines merge only if their manifests agree: the same dataset copied elsewhere, with
    new file times, must give the same stream id and share caches (the fingerprint hashes file contents, not
    locations or times); new pixels under the same file names change the fingerprint but not the stream."""
    import os
    import shutil

    from fakes import hirise_v1_like, write_image

    from benchmark.runner import stream_id
    from tasks.registry import load_task

    first = hirise_v1_like(tmp_path / "a", per_class={0: 12, 1: 12, 2: 12, 6: 12}, groups=6)
    second = tmp_path / "elsewhere" / "data"
    shutil.copytree(first, second)
    for image in (second / "hirise-v1" / "map-proj").iterdir():
        os.utime(image, ns=(1, 1))
    one, two = load_task("hirise-regions", first), load_task("hirise-regions", os.path.relpath(second))
    assert one.table.paths[0] != two.table.paths[0]
    assert one.fingerprint() == two.fingerprint()
    assert one.identity() == two.identity()
    repainted = sorted((second / "hirise-v1" / "map-proj").iterdir())[0]
    write_image(repainted, label=5, group=9, mode="L")
    three = load_task("hirise-regions", second)
    assert three.fingerprint() != one.fingerprint() and three.identity() == one.identity()
    e1, e2 = one.episodes(2, 1, 2, 5, seed=0), two.episodes(2, 1, 2, 5, seed=0)
    assert stream_id(e1) == stream_id(e2) and e1.digest == e2.digest
    relabelled = load_task("hirise-regions", first)
    relabelled.table.frame.loc[0, "group"] = "another-scene"
    assert relabelled.identity() != one.identity()


def test_a_shorter_run_does_not_shrink_the_saved_manifest(task, tmp_path):
    from benchmark.runner import save_manifest

    path = tmp_path / "m.npz"
    save_manifest(task.episodes(2, 1, 2, 6, seed=0), path)
    save_manifest(task.episodes(2, 1, 2, 2, seed=0), path)
    assert len(EpisodeSet.load(path)) == 6
    save_manifest(task.episodes(2, 1, 2, 9, seed=0), path)
    assert len(EpisodeSet.load(path)) == 9
    path.write_bytes(b"not a manifest")
    save_manifest(task.episodes(2, 1, 2, 3, seed=0), path)
    assert len(EpisodeSet.load(path)) == 3
