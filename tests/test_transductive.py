"""The transductive methods (bd-cspn, laplacianshot, tim, pt-map): batched like one by one, each episode on its own
(no other row moves its scores), the whole query handed over at once (episodes, fixed-K pools, scene windows),
their maths against the papers' definitions, and the mark every row and table carries."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from benchmark import fastpath
from benchmark.fastpath import batch_scores
from benchmark.runner import score_episode
from methods.registry import create_method
from methods.tim import gradient, loss
from methods.transductive import power_transform, rectify
from tests.fakes_methods import make_context, make_task

TRANSDUCTIVE = ["bd-cspn", "laplacianshot", "tim", "pt-map"]
FAST = {"tim": {"iterations": 60, "lr": 1e-3}}  # the tiny task needs no 1000 steps


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("transductive")
    task = make_task(root / "data", n_classes=4, groups_per_class=6, per_group=4)
    return task, make_context(task, root / "cache")


def prepared(name, ctx, **options):
    method = create_method(name, **{**FAST.get(name, {}), **options})
    method.prepare(ctx)
    return method


@pytest.mark.parametrize("name", TRANSDUCTIVE)
def test_an_episode_scores_the_same_alone_in_any_batch_and_one_by_one(name, tiny, monkeypatch):
    task, ctx = tiny
    method = prepared(name, ctx)
    assert method.transductive and type(method).transductive
    episodes = task.episodes(4, 2, 3, 12, seed=0)
    blind = episodes.blind()
    monkeypatch.setattr(fastpath, "CHUNK_BYTES", 1)  # one episode per chunk ...
    alone = batch_scores(method, blind, [5])
    monkeypatch.undo()  # ... and twelve in one
    together = batch_scores(method, blind, list(range(12)))
    np.testing.assert_array_equal(alone[0], together[5])
    for i in (0, 5, 11):
        episode = blind.episode(i)
        method.fit(episode.support_idx, episode.support_y, episode.n_way, np.random.default_rng(0))
        np.testing.assert_allclose(method.predict(episode.query_idx), together[i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", TRANSDUCTIVE)
def test_no_row_outside_the_episode_moves_its_scores(name, tiny):
    """What a transductive method reads of the query is its own episode's rows: rewriting every other row's
    features (other episodes' queries, the rest of the target pool) changes none of its scores."""
    task, ctx = tiny
    method = prepared(name, ctx)
    episode = task.episodes(4, 2, 3, 1, seed=3).episode(0)
    method.fit(episode.support_idx, episode.support_y, episode.n_way, np.random.default_rng(0))
    before = method.predict(episode.query_idx)
    mine = np.concatenate([episode.support_idx, episode.query_idx])
    others = torch.from_numpy(np.setdiff1d(np.arange(len(method.features)), mine))
    method.features[others] = torch.rand(
        len(others), method.features.shape[1], generator=torch.Generator().manual_seed(1)
    )
    np.testing.assert_array_equal(method.predict(episode.query_idx), before)


@pytest.mark.parametrize("name", TRANSDUCTIVE)
def test_scores_follow_the_query_order_and_beat_chance(name, tiny):
    task, ctx = tiny
    method = prepared(name, ctx)
    accuracies = []
    for episode in task.episodes(4, 2, 3, 6, seed=1):
        method.fit(episode.support_idx, episode.support_y, episode.n_way, np.random.default_rng(0))
        scores = method.predict(episode.query_idx)
        assert scores.shape == (12, 4) and np.isfinite(scores).all()
        perm = np.random.default_rng(2).permutation(12)
        np.testing.assert_allclose(method.predict(episode.query_idx[perm]), scores[perm], rtol=1e-4, atol=1e-4)
        accuracies.append(score_episode(episode, scores, task.class_names)["accuracy"])
    assert np.mean(accuracies) >= 0.8, accuracies


def test_bd_cspn_rectification_follows_the_paper():
    g = torch.Generator().manual_seed(0)
    support = F.normalize(torch.rand(1, 6, 8, generator=g), dim=-1)
    y = torch.tensor([[0, 0, 1, 1, 2, 2]])
    query = F.normalize(torch.rand(1, 9, 8, generator=g), dim=-1)
    protos, shifted = rectify(support, y, query, 3, epsilon=10.0)
    torch.testing.assert_close(shifted.mean(1), support.mean(1))  # the cross-class shift
    means = torch.stack([support[0, y[0] == c].mean(0) for c in range(3)])
    cos = F.normalize(shifted[0], dim=-1) @ F.normalize(means, dim=-1).T
    pseudo = cos.argmax(1)
    for c in range(
        3
    ):  # eq. 4: softmax(10 x cosine to the class mean) over the class's support and pseudo-labelled rows
        rows = torch.cat([support[0, y[0] == c], shifted[0, pseudo == c]])
        w = torch.softmax(10 * F.cosine_similarity(rows, means[c][None]), 0)
        torch.testing.assert_close(protos[0, c], (w[:, None] * rows).sum(0))
    top1, _ = rectify(support, y, query, 3, epsilon=10.0, top=1)
    for c in range(3):  # top=Z keeps each class's Z most similar pseudo-labelled queries
        members = torch.nonzero(pseudo == c).flatten()
        rows = support[0, y[0] == c]
        if len(members):
            rows = torch.cat([rows, shifted[0, members[cos[members, c].argmax()]][None]])
        w = torch.softmax(10 * F.cosine_similarity(rows, means[c][None]), 0)
        torch.testing.assert_close(top1[0, c], (w[:, None] * rows).sum(0))


def test_laplacianshot_without_its_laplacian_is_the_nearest_prototype(tiny):
    task, ctx = tiny
    plain = prepared("laplacianshot", ctx, lmd=0.0, rectify=False)
    simpleshot = prepared("simpleshot", ctx)
    for episode in task.episodes(4, 2, 3, 4, seed=2):
        for m in (plain, simpleshot):
            m.fit(episode.support_idx, episode.support_y, episode.n_way, np.random.default_rng(0))
        scores = plain.predict(episode.query_idx)
        np.testing.assert_allclose(np.exp(scores).sum(1), 1, rtol=1e-5)  # log of soft assignments
        np.testing.assert_array_equal(scores.argmax(1), simpleshot.predict(episode.query_idx).argmax(1))


def test_laplacianshot_neighbours_and_bound_updates():
    from methods.laplacianshot import neighbours, propagate

    query = torch.tensor([[[0.0], [0.1], [0.25], [5.0], [5.2]]])
    nbrs = neighbours(query, 2)
    assert nbrs[0].sort(-1).values.tolist() == [[1, 2], [0, 2], [0, 1], [2, 4], [2, 3]]  # never itself
    y = torch.eye(5)[None, :, :2].clone()
    assert propagate(y, nbrs)[0].tolist() == [[0, 1], [1, 0], [1, 1], [0, 0], [0, 0]]  # sums over the neighbours


def test_tim_gradient_is_autograds(tiny):
    g = torch.Generator().manual_seed(0)
    support = F.normalize(torch.rand(3, 6, 16, generator=g), dim=-1)
    query = F.normalize(torch.rand(3, 9, 16, generator=g), dim=-1)
    y = torch.tensor([0, 0, 1, 1, 2, 2]).expand(3, -1)
    target = F.one_hot(y, 3).float()
    w = torch.rand(3, 3, 16, generator=g).requires_grad_()
    loss(support, target, query, w, 15.0, (0.1, 1.0, 0.1)).sum().backward()
    ours = gradient(torch.cat([support, query], 1), target, 6, w.detach(), 15.0, (0.1, 1.0, 0.1))
    torch.testing.assert_close(ours, w.grad, rtol=1e-4, atol=1e-6)


def test_pt_map_transport_plans_have_the_balanced_marginals():
    from methods.pt_map import sinkhorn

    cost = torch.rand(4, 12, 3, generator=torch.Generator().manual_seed(0))
    plan = sinkhorn(cost, 10.0)
    torch.testing.assert_close(plan.sum(2), torch.ones(4, 12), atol=1e-5, rtol=0)
    torch.testing.assert_close(plan.sum(1), torch.full((4, 3), 4.0), atol=1e-4, rtol=0)
    x = torch.tensor([[0.0, 4.0, -1.0]])
    torch.testing.assert_close(power_transform(x, 0.5), F.normalize((x.clamp_min(0) + 1e-6) ** 0.5, dim=-1))


def test_the_power_transform_is_an_option_of_the_nearest_mean_methods(tiny):
    _, ctx = tiny
    for name in ("protonet", "simpleshot"):
        plain, powered = create_method(name), create_method(name, power=0.5)
        assert "power" not in plain.config() and powered.config()["power"] == 0.5  # old rows keep their key
        assert not plain.transductive and not powered.transductive  # a per-row transform
    powered = prepared("protonet", ctx, power=0.5)
    raw = torch.from_numpy(ctx.features())
    torch.testing.assert_close(powered.features, power_transform(raw, 0.5))
    with pytest.raises(Exception, match="power"):
        create_method("simpleshot", power=-1.0)


class QuerySpy:
    """Wraps a prepared method and records how many query rows each predict call got."""

    transductive = True

    def __init__(self, method):
        self.method, self.calls = method, []

    def fit(self, *args, **kwargs):
        return self.method.fit(*args, **kwargs)

    def predict(self, idx):
        self.calls.append(len(idx))
        return self.method.predict(idx)


def test_a_fixed_k_pool_and_a_scene_are_one_query(tiny, monkeypatch):
    from benchmark import fixedk
    from benchmark.mapping import map as mapping

    task, ctx = tiny
    spy = QuerySpy(prepared("bd-cspn", ctx))
    monkeypatch.setattr(fixedk, "PREDICT_CHUNK", 5)

    class Blind:
        train_idx, train_y = np.array(task.target[:8]), np.repeat(np.arange(4), 2)
        test_idx = np.array(task.target[8:40])

    fixedk.fixed_k_answers(spy, 2, [0], [Blind()], 4)
    assert spy.calls == [32]  # not chunks of 5
    spy.calls.clear()

    class Grid:
        n, shape = 30, (5, 6)

    class Points:
        class_names = ("a", "b")
        windows, labels = np.array([0, 1, 2, 3]), np.array([0, 1, 0, 1])

    class Windows:  # the harness's SceneWindows: which handle each window has
        grid = Grid()

        def window_indices(self, windows):
            return np.asarray(task.target)[np.asarray(windows)]

    probs, _ = mapping.classify_windows(spy, Windows(), Points(), np.random.default_rng(0), chunk=7)
    assert spy.calls == [30] and probs.shape == (5, 6, 2)


def test_leaderboards_mark_transductive_methods_and_can_leave_them_out(tmp_path, capsys):
    from fake_results import fake_rows, write_csv

    from benchmark.cli import main
    from benchmark.stats import paired_difference

    frame = fake_rows(
        {"tim": 0.72, "pt-map": 0.70, "protonet": 0.62, "simpleshot": 0.65},
        shots=(1, 5),
        episodes=100,
        transductive=("tim", "pt-map"),
    )
    write_csv(frame, tmp_path / "r.csv")
    assert main(["leaderboard", str(tmp_path / "r.csv"), "--format", "markdown"]) == 0
    text = capsys.readouterr().out
    assert "| tim (transductive) |" in text and "| pt-map (transductive) |" in text and "| protonet |" in text
    assert "(Transductive): the method also reads the unlabelled features" in text
    assert main(["leaderboard", str(tmp_path / "r.csv"), "--format", "summary"]) == 0
    assert "`tim` (transductive)" in capsys.readouterr().out
    assert main(["leaderboard", str(tmp_path / "r.csv"), "--inductive-only", "--format", "markdown"]) == 0
    text = capsys.readouterr().out
    assert "tim" not in text and "pt-map" not in text and "| protonet |" in text
    assert main(["leaderboard", str(tmp_path / "r.csv"), "--format", "transductive"]) == 0
    text = capsys.readouterr().out
    for k in (1, 5):  # the best of each kind, paired on their shared episodes
        part = frame[frame["shots"] == k]
        best_t = max(("tim", "pt-map"), key=lambda m: part[part["method"] == m]["accuracy"].mean())
        best_i = max(("protonet", "simpleshot"), key=lambda m: part[part["method"] == m]["accuracy"].mean())
        a, b = (part[part["method"] == m].set_index("episode")["accuracy"] for m in (best_t, best_i))
        d, half, n = paired_difference(a.to_numpy(), b.to_numpy())
        line = next(line for line in text.splitlines() if line.startswith(f"| fake-task (5-way, 15 q) | {k} |"))
        assert f"`{best_t}`" in line and f"`{best_i}`" in line and f"{100 * d:+.2f} ± {100 * half:.2f} ({n})" in line
    assert main(["leaderboard", str(tmp_path / "r.csv"), "--format", "transductive", "--inductive-only"]) == 2
    few = frame[(frame["method"] != "simpleshot") | (frame["episode"] < 99)]  # 99 episodes: too few to be the best
    write_csv(few, tmp_path / "few.csv")
    capsys.readouterr()
    assert main(["leaderboard", str(tmp_path / "few.csv"), "--format", "transductive"]) == 0
    assert all("`protonet`" in line for line in capsys.readouterr().out.splitlines() if line.startswith("| fake-task"))


def test_a_run_records_and_shows_that_its_method_is_transductive(tmp_path, capsys):
    import csv

    from test_sdft import make_tiny_task

    from benchmark.cli import main

    make_tiny_task(tmp_path / "data", n_classes=3, groups_per_class=4, per_group=4)
    out = tmp_path / "r.csv"
    assert (
        main(
            [
                *"run --method pt-map --method protonet --task".split(),
                f"folder:{tmp_path / 'data'}",
                *"--shots 1 --ways 3 --queries 2 --episodes 3 --image-size 32 --quiet --cache-dir".split(),
                str(tmp_path / "cache"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    shown = capsys.readouterr().out
    assert "pt-map (transductive)" in shown and "protonet (transductive)" not in shown
    with open(out, newline="") as f:
        marks = {(r["method"], r["transductive"]) for r in csv.DictReader(f)}
    assert marks == {("pt-map", "1"), ("protonet", "0")}
    assert main(["list"]) == 0
    listed = capsys.readouterr().out

    def row(name):  # the table's line whose first cell is the method (a description may name another method)
        return next(line for line in listed.splitlines() if line.count("│") > 1 and line.split("│")[1].strip() == name)

    for name in TRANSDUCTIVE:
        assert "transductive" in row(name)
    protonet = row("protonet")
    assert " inductive " in protonet and "transductive" not in protonet


def test_fixed_k_rows_and_tables_mark_a_transductive_method(tmp_path, capsys):
    import csv

    from fakes import domars16k_like

    from benchmark.cli import main

    data = domars16k_like(tmp_path / "data", products=4, per_product=2)
    out = tmp_path / "k.csv"
    assert (
        main(
            [
                *"fixedk --task domars16k --data-dir".split(),
                str(data),
                "--cache-dir",
                str(tmp_path / "cache"),
                *"--image-size 32 --shots 1 --seeds 0-1 --out".split(),
                str(out),
                *"--quiet --method bd-cspn --method protonet".split(),
            ]
        )
        == 0
    )
    shown = capsys.readouterr().out
    assert "bd-cspn (transductive)" in shown and "protonet (transductive)" not in shown and "whole test pool" in shown
    with open(out, newline="") as f:
        assert {(r["method"], r["transductive"]) for r in csv.DictReader(f)} == {("bd-cspn", "1"), ("protonet", "0")}
    assert main(["leaderboard", "--fixedk", str(out), "--format", "markdown"]) == 0
    assert "bd-cspn (transductive) / efficientnet_lite0" in capsys.readouterr().out
