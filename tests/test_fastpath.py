"""The vectorised episode path gives the per-episode scores and results of the simple fit/predict path."""

import numpy as np
import pytest
import torch
from test_sdft import make_tiny_task

from benchmark import fastpath
from benchmark.fastpath import batch_scores, chunk_episodes, in_query_order, score_chunk, supports_batches
from benchmark.protocols.episodes import run_benchmark
from benchmark.results import read_results
from benchmark.runner import MethodSpec, RunConfig, score_episode
from benchmark.scoring import ScoreError
from methods.base import Context
from methods.cache import Cache
from methods.nearest_mean import class_means, gather_rows, squared_norms
from methods.registry import create_method
from tasks.episodes import in_row_order

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", ["protonet", "simpleshot"])
def test_batched_episodes_match_one_by_one(tmp_path, name, monkeypatch):
    task = make_tiny_task(tmp_path / "data", n_classes=4, groups_per_class=5)
    method = create_method(name)
    method.prepare(Context(task, Cache(tmp_path / "cache"), image_size=32))
    assert supports_batches(method)
    episodes = task.episodes(3, 2, 3, 40, seed=0)
    monkeypatch.setattr(fastpath, "CHUNK_BYTES", 1)  # one episode per chunk ...
    assert chunk_episodes(episodes, method.features.shape[1]) == 1
    blind = episodes.blind()  # what the method answers from: queries in ascending row order
    one_per_chunk = batch_scores(method, blind, [7])
    monkeypatch.undo()  # ... and all 40 in one
    assert chunk_episodes(blind, method.features.shape[1]) >= 40
    batched = batch_scores(method, blind, list(range(len(episodes))))
    np.testing.assert_array_equal(one_per_chunk[0], batched[7])
    batched = in_query_order(batched, in_row_order(episodes.query)[1])  # as the harness puts them back
    results = score_chunk(episodes, list(range(len(episodes))), batched, task.class_names)
    for i, episode in enumerate(episodes):
        method.fit(episode.support_idx, episode.support_y, episode.n_way, np.random.default_rng(0))
        single = method.predict(episode.query_idx)
        np.testing.assert_allclose(batched[i], single, rtol=1e-5, atol=1e-4)
        assert results[i] == score_episode(episode, single, task.class_names)


def test_norms_computed_once_are_the_norms_of_gathered_rows():
    x = torch.randn(300, 1280, generator=torch.Generator().manual_seed(0))
    idx = torch.as_tensor(np.random.default_rng(0).integers(0, 300, (17, 45)))
    assert torch.equal(squared_norms(x)[idx], (x[idx] ** 2).sum(-1))
    assert squared_norms(x) is squared_norms(x)  # computed once per feature tensor
    assert torch.equal(gather_rows(x, idx), x[idx])


def test_class_means_from_the_matrix_equal_those_of_gathered_rows_bit_for_bit():
    rng = np.random.default_rng(0)
    x = torch.randn(300, 1280, generator=torch.Generator().manual_seed(1)) * 7
    idx = torch.as_tensor(rng.integers(0, 300, (9, 11)))
    y = torch.as_tensor(rng.integers(0, 4, (9, 11)))  # shuffled labels, unequal (and some empty) classes
    batched = class_means(x, idx, y, 4)
    for e in range(9):
        one = class_means(x[idx[e]], torch.arange(11), y[e], 4)
        assert torch.equal(batched[e], one)
        for c in range(4):
            rows = x[idx[e][y[e] == c]]
            expected = rows.mean(0) if len(rows) else torch.zeros(1280)
            torch.testing.assert_close(one[c], expected, rtol=1e-6, atol=1e-5)


def test_chunk_scoring_equals_score_episode_on_random_and_tied_scores(tmp_path):
    task = make_tiny_task(tmp_path / "data", n_classes=4, groups_per_class=5)
    episodes = task.episodes(4, 1, 3, 60, seed=1)
    rng = np.random.default_rng(3)
    # small integers: many ties and episodes where some class is never predicted (F1's 0/0 case)
    scores = rng.integers(0, 3, (len(episodes), 12, 4)).astype(np.float32)
    scores[:5] = 0  # everything predicted as the first class
    results = score_chunk(episodes, list(range(len(episodes))), scores, task.class_names)
    for i, episode in enumerate(episodes):
        assert results[i] == score_episode(episode, scores[i], task.class_names)
    with pytest.raises(ScoreError, match="shape"):
        score_chunk(episodes, [0, 1], scores[:1], task.class_names)
    scores[0, 0, 0] = np.nan
    with pytest.raises(ScoreError, match="finite"):
        score_chunk(episodes, [0], scores[:1], task.class_names)


def test_harness_rows_are_the_same_on_both_paths(tmp_path, monkeypatch):
    make_tiny_task(tmp_path / "data", n_classes=5, groups_per_class=6, per_group=5)

    def run(out):
        config = RunConfig(
            methods=[MethodSpec("protonet"), MethodSpec("simpleshot")],
            task=f"folder:{tmp_path / 'data'}",
            shots=[1, 2],
            n_way=3,
            n_query=2,
            episodes=25,
            data_dir=tmp_path,
            cache_dir=tmp_path / "cache",
            out=out,
            image_size=32,
        )
        run_benchmark(config)
        return read_results(out).drop(columns=["seconds", "timestamp"]).sort_values(["method", "shots", "episode"])

    fast = run(tmp_path / "fast.csv")
    monkeypatch.setattr("benchmark.runner.supports_batches", lambda method: False)
    simple = run(tmp_path / "simple.csv")
    assert len(fast) == 2 * 2 * 25
    assert fast.reset_index(drop=True).equals(simple.reset_index(drop=True))


def test_batching_is_declared_by_the_class_not_detected():
    assert not supports_batches(create_method("linear-probe"))
    assert supports_batches(create_method("protonet"))  # NearestClassMean declares BatchedMethod
    from methods.protonet import ProtoNet

    with pytest.raises(TypeError, match="predict_batch"):  # a new per-episode answer without a batched one
        type("Changed", (ProtoNet,), {"predict_features": lambda self, x: -x})


def test_worker_threads_give_the_same_scores_in_the_same_order(tmp_path, monkeypatch):
    from benchmark.fastpath import chunked_answers

    task = make_tiny_task(tmp_path / "data", n_classes=4, groups_per_class=5)
    method = create_method("protonet")
    method.prepare(Context(task, Cache(tmp_path / "cache"), image_size=32))
    episodes = task.episodes(3, 2, 3, 50, seed=0)
    monkeypatch.setattr(fastpath, "CHUNK_BYTES", 3 * 15 * method.features.shape[1] * 4)  # 3 episodes a chunk
    pending = [i for i in range(50) if i % 7]
    one = [(c, s.tobytes()) for c, s, _ in chunked_answers(method, episodes.blind(), pending, lambda: 0.0, workers=1)]
    three = [(c, s.tobytes()) for c, s, _ in chunked_answers(method, episodes.blind(), pending, lambda: 0.0, workers=3)]
    assert [i for c, _ in one for i in c] == pending and one == three
