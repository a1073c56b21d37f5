"""--source SPEC: another labelled set as every pre-training method's base pool, on the same episodes."""

import csv
import shutil

import numpy as np
import pytest
import torch
from fakes import aid_like, hirise_v1_like

import methods.protonet
from benchmark.cli import main
from common.errors import UserError
from methods.base import Context
from methods.cache import Cache
from methods.registry import create_method
from tasks.protocols import fixed_k_pools, protocol_base
from tasks.registry import AID_TARGET_CLASSES, load_task


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("source") / "data"
    hirise_v1_like(root, per_class={0: 10, 1: 10, 2: 10, 6: 10}, groups=5)
    aid_like(root, classes=AID_TARGET_CLASSES + ("Forest", "Park"), per_class=3)  # 2 base, 10 target classes
    return root


def test_the_base_pool_is_the_source_and_the_episodes_are_unchanged(data):
    plain = load_task("hirise-regions", data)
    task = load_task("hirise-regions", data, source="aid")
    aid = load_task("aid-classes", data)  # the same images, as a task
    n = len(plain.table)
    assert task.source == "aid" and plain.source == ""
    assert np.array_equal(task.base, np.arange(n, n + len(aid.table))) and np.array_equal(task.target, plain.target)
    assert sorted(task.table.paths[task.base]) == sorted(aid.table.paths)  # all of a dataset's images
    assert task.table.frame.iloc[:n].equals(plain.table.frame)
    assert not set(task.table.groups[task.base]) & set(plain.table.groups)
    assert not set(task.table.labels[task.base]) & set(plain.table.labels)
    for k in (1, 2):
        a, b = plain.episodes(3, k, 2, 15, seed=4), task.episodes(3, k, 2, 15, seed=4)
        assert a.digest == b.digest and a.stream == b.stream
        assert np.array_equal(a.support, b.support) and np.array_equal(a.query, b.query)
    assert len({plain.name, task.name, load_task("hirise-regions", data, source="aid-classes").name}) == 3
    for other in ("aid-classes", None):
        again = load_task("hirise-regions", data, source=other)
        assert again.identity() != task.identity() and again.fingerprint() != task.fingerprint()


def test_a_task_name_as_source_gives_its_base_pool(data):
    task = load_task("hirise-regions", data, source="aid-classes")
    aid = load_task("aid-classes", data)
    assert sorted(task.table.paths[task.base]) == sorted(aid.table.paths[aid.base])


def test_fixed_k_with_a_source_prepares_on_the_source(data):
    task = load_task("hirise-regions", data, source="aid")
    pools = fixed_k_pools(task)
    assert np.array_equal(protocol_base(task, pools), task.base)
    assert np.array_equal(np.sort(np.concatenate([pools.train, pools.test])), np.sort(task.target))


def test_a_source_sharing_images_by_content_is_refused(data, tmp_path):
    copy = tmp_path / "copy"
    for i, path in enumerate(sorted((data / "hirise-v1" / "map-proj").iterdir())[:5]):
        (copy / ("a" if i % 2 else "b")).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy / ("a" if i % 2 else "b") / f"renamed{i}.png")  # other names, same bytes
    with pytest.raises(UserError, match=r"--source folder:.* shares 5 image\(s\) with task hirise-regions") as exc:
        load_task("hirise-regions", data, source=f"folder:{copy}")
    assert "\n" not in str(exc.value) and "renamed0.png" in str(exc.value)
    with pytest.raises(UserError, match="shares"):
        load_task("hirise-regions", data, source="hirise-v1")


def test_an_unknown_source_is_one_line(data):
    with pytest.raises(UserError, match="--source 'nope' is neither a task"):
        load_task("hirise-regions", data, source="nope")


def test_simpleshot_and_protonet_prepare_on_the_source(data, tmp_path, monkeypatch):
    task = load_task("hirise-regions", data, source="aid")
    ctx = Context(task, Cache(tmp_path / "cache"), image_size=32)
    simple = create_method("simpleshot")
    simple.prepare(ctx)
    features = torch.as_tensor(ctx.features())
    assert torch.allclose(simple.base_mean, features[torch.as_tensor(task.base)].mean(0))
    seen = {}
    real = methods.protonet.train_embedding

    def spy(features, index, *args, **kwargs):
        seen["base"], seen["classes"] = index.pool.copy(), set(index.classes.tolist())
        return real(features, index, *args, **kwargs)

    monkeypatch.setattr(methods.protonet, "train_embedding", spy)
    create_method("protonet", metatrain=True, steps=2, train_way=2, train_shots=1, train_queries=1).prepare(ctx)
    assert np.array_equal(seen["base"], task.base)
    assert seen["classes"] == set(task.table.labels[task.base].tolist())


def test_bench_run_keeps_sources_apart_in_the_results(data, tmp_path):
    out = tmp_path / "r.csv"

    def run(*extra):
        return main(
            [
                *"run --task hirise-regions --method simpleshot --ways 3 --shots 1 --queries 2 --episodes 4 --image-size 32 --data-dir".split(),
                str(data),
                "--cache-dir",
                str(tmp_path / "cache"),
                "--out",
                str(out),
                "--quiet",
                *extra,
            ]
        )

    assert run() == 0 and run("--source", "aid") == 0 and run("--source", "aid") == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8  # the second --source aid run reused its rows; the plain run's were not reused
    by_task = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    assert sorted(by_task) == ["hirise-regions", "hirise-regions+aid"]
    assert {r["manifest"] for r in rows} == {rows[0]["manifest"]}  # the same episodes: differences pair up
    assert {r["source"] for r in by_task["hirise-regions"]} == {""}
    assert {r["source"] for r in by_task["hirise-regions+aid"]} == {"aid"}
    assert main(["leaderboard", str(out), "--format", "csv"]) == 0


def test_sdft_step1_trains_on_the_source(data, tmp_path, monkeypatch):
    import methods.sdft

    task = load_task("hirise-regions", data, source="aid")
    seen = {}
    real = methods.sdft.train_step1

    def spy(model, images, labels, groups, *args, **kwargs):
        seen.update(n=len(images), classes=len(set(labels.tolist())), groups=set(groups))
        return real(model, images, labels, groups, *args, **kwargs)

    monkeypatch.setattr(methods.sdft, "train_step1", spy)
    sdft = create_method("sdft", epochs=1, batch_size=8, steps=2, val_folds=3)  # 3 images per AID class
    ctx = Context(task, Cache(tmp_path / "cache"), image_size=32)
    sdft.prepare(ctx)
    assert seen["n"] == len(task.base) and seen["classes"] == len(set(task.table.labels[task.base]))
    assert seen["groups"] == set(task.table.groups[task.base])
    plain = Context(load_task("hirise-regions", data), Cache(tmp_path / "cache"), image_size=32)
    assert sdft.step1_key(ctx) != sdft.step1_key(plain)


def test_validation_episodes_with_a_source_come_from_the_validation_slice(data):
    """The split is taken before the source is added: with a source, validation episodes must still come from
    the validation slice of the task's own base pool, never from its target pool."""
    plain = load_task("hirise-regions", data)
    val = load_task("hirise-regions", data, split="validation")
    task = load_task("hirise-regions", data, source="aid", split="validation")
    assert task.name.startswith("hirise-regions@validation")
    # episodes are drawn from task.plain's target pool (Task.episodes): that must be the validation slice
    assert task.plain.name == val.name and np.array_equal(task.plain.target, val.target)
    assert len(val.target) and not set(val.target.tolist()) & set(plain.target.tolist())
    with pytest.raises(UserError, match="validation split before adding a source"):
        load_task("hirise-regions", data, source="aid").validation()


def test_leaderboard_sources_pairs_each_source_with_no_source(data, tmp_path, capsys):
    out = tmp_path / "r.csv"

    def run(*extra):
        return main(
            [
                *"run --task hirise-regions --method simpleshot --method protonet --ways 3 --shots 1 --queries 2 --episodes 6 --image-size 32 --data-dir".split(),
                str(data),
                "--cache-dir",
                str(tmp_path / "cache"),
                "--out",
                str(out),
                "--quiet",
                *extra,
            ]
        )

    assert run() == 0 and run("--source", "aid") == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    acc = {(r["task"], r["method"], int(r["episode"])): float(r["accuracy"]) * 100 for r in rows}
    capsys.readouterr()
    assert main(["leaderboard", str(out), *"--format sources --versus protonet".split()]) == 0
    text = capsys.readouterr().out
    lines = {
        tuple(c.strip() for c in line.strip("|").split("|")[:3]): line
        for line in text.splitlines()
        if line.startswith("| `")
    }
    assert set(lines) == {(f"`{m}`", "1", s) for m in ("simpleshot", "protonet") for s in ("none", "aid")}
    # protonet ignores the base pool: its aid rows are its no-source rows, a difference of exactly 0
    assert "+0.00 ± 0.00 (6)" in lines[("`protonet`", "1", "aid")]
    expected = np.mean(
        [acc[("hirise-regions+aid", "simpleshot", i)] - acc[("hirise-regions", "simpleshot", i)] for i in range(6)]
    )
    cells = [c.strip() for c in lines[("`simpleshot`", "1", "aid")].strip("|").split("|")]
    assert cells[4].startswith(f"{expected:+.2f}") and cells[4].endswith("(6)")
    assert main(["leaderboard", str(out), *"--format sources --versus nosuch".split()]) == 2
    assert main(["leaderboard", str(out), "--versus", "protonet"]) == 2


def test_sdft_no_step1_with_a_source_computes_no_activations_for_the_source(data, tmp_path, monkeypatch):
    """sdft-no-step1 never reads the base pool (the source's images): it pays only for the task's own rows,
    and answers the episodes as without the source."""
    import methods.sdft

    task = load_task("hirise-regions", data, source="aid")
    plain = load_task("hirise-regions", data)
    passed = []
    real = methods.sdft.run_model

    def spy(module, images, *args, **kwargs):
        passed.append(len(images))
        return real(module, images, *args, **kwargs)

    monkeypatch.setattr(methods.sdft, "run_model", spy)
    answers = {}
    for name, t in (("source", task), ("plain", plain)):
        method = create_method("sdft-no-step1", steps=2)
        method.prepare(Context(t, Cache(tmp_path / name), image_size=32))
        ep = next(iter(t.episodes(3, 1, 2, 1, seed=0)))
        method.fit(ep.support_idx, ep.support_y, ep.n_way, np.random.default_rng(0))
        answers[name] = method.predict(ep.query_idx)
    assert passed == [len(task.table) - len(task.base), len(plain.table) - len(plain.base)]
    assert passed[0] == len(plain.table)  # the task's own rows, none of the source's
    np.testing.assert_allclose(answers["source"], answers["plain"], rtol=1e-4, atol=1e-5)
