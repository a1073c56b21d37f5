"""Paired differences on shared episodes, tie-aware ranks, per-class accuracy, means over seeds."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from benchmark.stats import class_accuracy, compare_methods, mean_ci, paired_difference, summarize, tie_ranks


def test_paired_difference_matches_scipy_paired_t_interval():
    rng = np.random.default_rng(1)
    a = rng.normal(0.6, 0.1, 50)
    b = a - 0.02 + rng.normal(0, 0.02, 50)
    mean, half, n = paired_difference(a, b)
    ci = sps.ttest_rel(a, b).confidence_interval(0.95)
    assert n == 50
    assert mean == pytest.approx((ci.low + ci.high) / 2) and half == pytest.approx((ci.high - ci.low) / 2)


def test_paired_difference_uses_only_complete_pairs():
    a = np.array([0.5, 0.6, np.nan, 0.7, 0.9])
    b = np.array([0.4, np.nan, 0.3, 0.5, 0.6])
    mean, half, n = paired_difference(a, b)
    assert n == 3 and mean == pytest.approx(np.mean([0.1, 0.2, 0.3]))
    assert half == pytest.approx(mean_ci([0.1, 0.2, 0.3])[1])


def test_pairing_separates_methods_that_independent_intervals_cannot():
    rng = np.random.default_rng(2)
    difficulty = rng.normal(0.6, 0.15, 100)  # episodes differ a lot; the methods differ little but steadily
    a, b = difficulty + 0.02 + rng.normal(0, 0.01, 100), difficulty
    (ma, ha), (mb, hb) = mean_ci(a), mean_ci(b)
    assert abs(ma - mb) < ha + hb  # the unpaired intervals overlap
    mean, half, _ = paired_difference(a, b)
    assert mean - half > 0  # the paired one excludes zero


def ranks(order, tied_pairs):
    pairs = {frozenset(p) for p in tied_pairs}
    return tie_ranks(order, lambda m, leader: frozenset((m, leader)) in pairs)


def test_tie_ranks_rule():
    assert ranks("ABC", []) == {"A": 1, "B": 2, "C": 3}
    assert ranks("ABC", [("A", "B")]) == {"A": 1, "B": 1, "C": 3}
    assert ranks("ABC", [("A", "B"), ("A", "C")]) == {"A": 1, "B": 1, "C": 1}
    # going down: C is tied with B (the leader of rank 2), not with A
    assert ranks("ABCD", [("B", "C")]) == {"A": 1, "B": 2, "C": 2, "D": 4}
    # C cannot be told apart from A although B, above it, can: C shares A's rank
    assert ranks("ABC", [("A", "C")]) == {"A": 1, "C": 1, "B": 3}
    # ties are judged against the leader only: C tied with B but B already ranked with A, C not tied with A
    assert ranks("ABC", [("A", "B"), ("B", "C")]) == {"A": 1, "B": 1, "C": 3}


def episode_rows(accuracies: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"method": m, "episode": e, "accuracy": a, "macro_f1": a, "seconds": 0.1}
            for m, values in accuracies.items()
            for e, a in enumerate(values)
            if not np.isnan(a)
        ]
    )


def test_compare_methods_deltas_and_ranks():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.3, 0.9, 200)
    noise = rng.normal(0, 0.05, 200)
    table = compare_methods(
        episode_rows(
            {
                "best": base + 0.10,
                "twin": base + 0.10,
                "close": base + 0.099 + noise - noise.mean(),
                "worse": base,
                "worst": base - 0.2,
            }
        )
    ).set_index("method")
    assert table.loc["twin", "delta"] == 0 and table.loc["twin", "rank"] == 1  # identical: CI 0 includes 0
    assert table.loc["close", "rank"] == 1
    assert table.loc["close", "delta_ci95"] > abs(table.loc["close", "delta"])
    assert table.loc["worse", "delta"] == pytest.approx(-0.10) and table.loc["worse", "rank"] == 4
    assert table.loc["worst", "delta"] == pytest.approx(-0.30) and table.loc["worst", "rank"] == 5
    assert (table["paired"] == 200).all() and (table["episodes"] == 200).all()
    assert math.isnan(table["delta_ci95"].iloc[0]) and table.index[0] == "best"  # equal means: by name
    acc, half = mean_ci(base)
    assert table.loc["worse", "accuracy"] == pytest.approx(acc) and table.loc[
        "worse", "accuracy_ci95"
    ] == pytest.approx(half)


def test_compare_methods_pairs_only_shared_episodes():
    a = np.linspace(0.5, 0.9, 30)
    b = np.full(30, np.nan)
    b[:10] = a[:10] - 0.05 + np.tile([0.01, -0.01], 5)  # ran only the first 10 episodes
    table = compare_methods(episode_rows({"a": a, "b": b})).set_index("method")
    assert table.loc["b", "episodes"] == 10 and table.loc["b", "paired"] == 10
    assert table.loc["b", "delta"] == pytest.approx(-0.05)
    # one shared episode: the difference has no interval, so the two cannot be told apart
    c = np.full(30, np.nan)
    c[0] = 0.1
    table = compare_methods(episode_rows({"a": a, "c": c})).set_index("method")
    assert table.loc["c", "paired"] == 1 and table.loc["c", "rank"] == 1


def test_compare_methods_refuses_a_repeated_episode():
    rows = episode_rows({"a": np.array([0.5, 0.6])})
    with pytest.raises(ValueError):
        compare_methods(pd.concat([rows, rows.iloc[:1]]))


def test_class_accuracy_averages_over_episodes_containing_the_class():
    rows = pd.DataFrame(
        {"method": ["m", "m", "n"], "classes": ["a|b", "b|c", "a|b"], "class_accuracy": ["1|0.5", "0.25|0", "0|1"]}
    )
    t = class_accuracy(rows).set_index(["method", "class"])
    assert t.loc[("m", "a"), "accuracy"] == 1 and t.loc[("m", "a"), "episodes"] == 1
    assert t.loc[("m", "b"), "accuracy"] == pytest.approx(0.375) and t.loc[("m", "b"), "episodes"] == 2
    assert t.loc[("m", "b"), "ci95"] == pytest.approx(mean_ci([0.5, 0.25])[1])
    assert t.loc[("n", "b"), "accuracy"] == 1 and ("n", "c") not in t.index
    with pytest.raises(ValueError):
        class_accuracy(pd.DataFrame({"method": ["m"], "classes": ["a|b"], "class_accuracy": ["1"]}))


def test_summarize_over_seeds_for_the_fixed_k_protocol():
    frame = pd.DataFrame(
        {
            "method": ["m"] * 3 + ["n"] * 3,
            "k": [10] * 6,
            "seed": [0, 1, 2] * 2,
            "accuracy": [0.7, 0.8, 0.75, 0.5, 0.5, 0.5],
            "weighted_f1": [0.6, 0.7, 0.8, 0.4, 0.5, 0.6],
        }
    )
    t = summarize(frame, ["method", "k"], ("accuracy", "weighted_f1"), count="seeds", unique="seed").set_index("method")
    assert t.loc["m", "seeds"] == 3
    assert (t.loc["m", "accuracy"], t.loc["m", "accuracy_ci95"]) == pytest.approx(mean_ci([0.7, 0.8, 0.75]))
    assert t.loc["m", "weighted_f1_ci95"] == pytest.approx(sps.t.ppf(0.975, 2) * 0.1 / np.sqrt(3))
    assert t.loc["n", "accuracy_ci95"] == 0
    with pytest.raises(ValueError):
        summarize(pd.concat([frame, frame.iloc[:1]]), ["method", "k"], count="seeds", unique="seed")
