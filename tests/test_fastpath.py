"""The vectorised episode path gives the per-episode accuracies of the simple fit/predict path."""
import numpy as np
import pytest

from benchmark.fastpath import batch_scores, supports_batches
from benchmark.runner import score_episode
from methods.base import Context
from methods.cache import Cache
from methods.registry import create_method
from test_sdft import make_tiny_task


@pytest.mark.parametrize("name", ["protonet", "simpleshot"])
def test_batched_episodes_match_one_by_one(tmp_path, name):
    task = make_tiny_task(tmp_path / "data", n_classes=4, groups_per_class=5)
    method = create_method(name)
    method.prepare(Context(task, Cache(tmp_path / "cache"), image_size=32))
    assert supports_batches(method)
    episodes = task.episodes(3, 2, 3, 40, seed=0)
    batched = batch_scores(method, episodes, list(range(len(episodes))))
    for i, episode in enumerate(episodes):
        method.fit(episode.support_idx, episode.support_y, episode.n_way, np.random.default_rng(0))
        single = method.predict(episode.query_idx)
        np.testing.assert_allclose(batched[i], single, rtol=1e-4, atol=1e-4)
        assert score_episode(episode, batched[i], task.class_names) == score_episode(episode, single, task.class_names)


def test_methods_without_batches_take_the_simple_path():
    assert not supports_batches(create_method("linear-probe"))
