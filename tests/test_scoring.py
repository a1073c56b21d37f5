"""benchmark/scoring.py: the one scorer gives scikit-learn's numbers, bit for bit, and checks scores once."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from benchmark.scoring import ScoreError, join_labels, score_episodes, score_fixed_k, split_labels


def test_fixed_k_scores_are_scikit_learns_bit_for_bit():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n, m = int(rng.integers(2, 8)), int(rng.integers(1, 40))
        truth = rng.integers(0, n, m)
        scores = rng.integers(0, 3, (m, n)).astype(float)  # ties, and classes never predicted or never true
        pred = scores.argmax(1)
        got = score_fixed_k(truth, scores, n)
        labels = np.arange(n)
        assert got["accuracy"] == float((pred == truth).mean())
        assert got["macro_f1"] == float(f1_score(truth, pred, average="macro", labels=labels, zero_division=0))
        assert got["weighted_f1"] == float(f1_score(truth, pred, average="weighted", labels=labels, zero_division=0))


def test_episode_scores_are_scikit_learns_and_class_recalls():
    rng = np.random.default_rng(1)
    n_way, q = 5, 3
    truth = np.repeat(np.arange(n_way), q)
    scores = rng.integers(0, 2, (40, n_way * q, n_way)).astype(np.float32)
    classes = np.stack([rng.choice(9, n_way, replace=False) for _ in range(40)])
    names = [f"c{i}" for i in range(9)]
    rows = score_episodes(scores, np.broadcast_to(truth, (40, n_way * q)), classes, names)
    for s, c, row in zip(scores, classes, rows):
        pred = s.argmax(1)
        assert row["macro_f1"] == float(
            f1_score(truth, pred, average="macro", labels=np.arange(n_way), zero_division=0)
        )
        assert row["accuracy"] == float((pred == truth).mean())
        assert row["class_accuracy"] == "|".join(f"{(pred[truth == k] == k).mean():.6g}" for k in range(n_way))
        assert row["classes"] == "|".join(names[i] for i in c)


@pytest.mark.parametrize(
    "scores,match",
    [
        (np.zeros((6, 2)), r"scores of shape \(6, 2\); expected \(6, 3\)"),
        (np.full((6, 3), np.inf), "18 non-finite scores"),
        (np.array([["a"] * 3] * 6), "expected real numbers"),
        (np.zeros((6, 3)) + 1j, "scores of type complex128; expected real numbers"),
        (np.zeros((6, 3), bool), "scores of type bool; expected real numbers"),
    ],
)
def test_unscorable_scores_are_named(scores, match):
    with pytest.raises(ScoreError, match=match):
        score_fixed_k(np.zeros(6, int), scores, 3, what="method probe")


def test_labels_with_separators_and_backslashes_round_trip():
    for names in (["a", "b"], ["dark|dune", "x"], ["back\\slash|", "\\", "|", ""], ["a\\|b"]):
        assert split_labels(join_labels(names)) == names
    assert join_labels(["crater", "dark dune"]) == "crater|dark dune"  # plain names are written as before
