"""The query-blind views that methods answer from (here and on Ray workers) hold no query or test labels: no
field holds them, the order of the query rows does not give them, and nothing leads back to what does."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np

from tasks.episodes import BlindEpisode, BlindEpisodes, PoolIndex, sample_episodes
from tasks.protocols import FixedKSet

NAMES = [f"class{c}" for c in range(5)]


def episode_set(n_episodes: int = 20):
    labels = np.repeat(np.arange(5), 24)
    groups = np.array([f"scene{c}-{i % 6}" for c, i in zip(labels, range(len(labels)))])
    index = PoolIndex(labels, groups, np.arange(len(labels)))
    return sample_episodes("t", "stream", index, 3, 2, 4, n_episodes, 0, NAMES)


def test_no_field_of_the_view_holds_query_labels():
    episodes = episode_set()
    blind = episodes.blind()
    assert {f.name for f in dataclasses.fields(BlindEpisodes)} == {"n_way", "n_shot", "classes", "support", "query"}
    assert {f.name for f in dataclasses.fields(BlindEpisode)} == {
        "index",
        "classes",
        "support_idx",
        "support_y",
        "query_idx",
    }
    assert set(vars(blind)) == {"n_way", "n_shot", "classes", "support", "query"}
    for i in range(len(episodes)):
        one = blind.episode(i)
        assert not hasattr(one, "query_y") and not hasattr(blind, "query_y")
        assert np.all(np.diff(one.query_idx) > 0)  # ascending rows: positions say nothing of classes
        assert np.array_equal(np.sort(episodes.query[i]), one.query_idx)
        assert np.array_equal(one.support_idx, episodes.support[i])
        assert np.array_equal(one.support_y, episodes.episode(i).support_y)
        assert np.array_equal(one.classes, episodes.classes[i])


def test_the_same_rows_labelled_otherwise_give_the_same_view():
    episodes = episode_set()
    rng = np.random.default_rng(1)
    shuffled = np.stack([rng.permutation(row) for row in episodes.query])  # the query's rows, other labels
    relabelled = dataclasses.replace(episodes, query=shuffled)
    assert not np.array_equal(shuffled, episodes.query)
    for name in ("classes", "support", "query"):
        assert np.array_equal(getattr(episodes.blind(), name), getattr(relabelled.blind(), name))


def test_the_view_is_read_only_copies_that_lead_nowhere():
    episodes = episode_set()
    blind = episodes.blind()
    for name in ("classes", "support", "query"):
        view = getattr(blind, name)
        assert not view.flags.writeable
        assert not any(np.shares_memory(view, a) for a in (episodes.classes, episodes.support, episodes.query))
    sent = pickle.dumps(blind)  # what a Ray worker receives
    assert b"EpisodeSet" not in sent and b"query_y" not in sent
    assert isinstance(pickle.loads(sent), BlindEpisodes)


def test_a_fixed_k_draw_hides_its_test_labels():
    draw = FixedKSet(np.arange(6), np.repeat(np.arange(3), 2), np.arange(10, 40), np.arange(30) % 3)
    blind = draw.blind()
    assert blind._fields == ("train_idx", "train_y", "test_idx") and not hasattr(blind, "test_y")
    for got, given in zip(blind, draw):
        assert np.array_equal(got, given) and not np.shares_memory(got, given)
    assert b"test_y" not in pickle.dumps(blind)
