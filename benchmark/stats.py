"""Means with t-based 95% confidence intervals over episodes (scipy for the distribution), paired differences
between methods on shared episodes, tie-aware ranks, per-class accuracy, summaries over episodes or seeds, and
the "mean ± CI" text every table prints: the one place these are computed."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# scipy.special's t quantile is what scipy.stats.t.ppf computes, without importing scipy.stats (1.3 s)
from scipy.special import stdtrit

from benchmark.scoring import split_labels


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the `confidence` interval: t(1-a/2, n-1) * s / sqrt(n). Half-width is nan for n < 2."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan
    sem = x.std(ddof=1) / math.sqrt(n)
    return mean, float(stdtrit(n - 1, 0.5 + confidence / 2) * sem)


# ---------------------------------------------------------------------------------------------------------------
# Comparisons on shared episodes. All methods of a run answer the same episodes (one episode stream, named by
# the `manifest` column), so a method is compared with another through the per-episode differences on the
# episodes both answered: a paired comparison, much tighter than two independent intervals.


def _includes_zero(mean: float, half: float) -> bool:
    """Whether the interval mean ± half contains 0; an undefined interval (nan: fewer than two pairs) does."""
    return bool(math.isnan(mean) or math.isnan(half) or abs(mean) <= half)


def paired_difference(a, b, confidence: float = 0.95) -> tuple[float, float, int]:
    """(mean of a - b, t-based half-width of its `confidence` interval, number of pairs) over aligned pairs;
    pairs where either value is missing (nan) are left out."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    both = ~(np.isnan(a) | np.isnan(b))
    mean, half = mean_ci(a[both] - b[both], confidence)
    return mean, half, int(both.sum())


def tie_ranks(order: list[str], tied) -> dict[str, int]:
    """Ranks with ties, going down a list of methods sorted best first (highest mean accuracy first).

    The rule: the best method not yet ranked opens a rank; every other method not yet ranked whose paired
    95% CI of the difference to that method includes zero (`tied(method, leader)` is true) takes the same
    rank, whether or not it sits right below the leader in the list. Competition numbering: after a group of
    g methods sharing rank r, the next rank is r + g (1, 1, 3). Repeat with the methods left. So rank 1 is
    the best method and every method that cannot be told apart from it on these episodes; a method whose CI
    against the leader is undefined (fewer than two shared episodes) cannot be separated from it and shares
    its rank. Because a noisy method can tie with the leader while a steadier one with a higher mean does
    not, a rank is not always monotone in the mean; the table is sorted by rank, then mean.
    """
    ranks: dict[str, int] = {}
    left = list(order)
    while left:
        leader, rest = left[0], left[1:]
        rank = len(ranks) + 1
        group = [leader] + [m for m in rest if tied(m, leader)]
        for m in group:
            ranks[m] = rank
        left = [m for m in left if m not in ranks]
    return ranks


# What compare_methods says of each method: episodes, accuracy with its CI, the paired difference to the best
# with its CI and pair count, macro-F1 with its CI (tuning's table shows the same figures)
FIGURES = ("episodes", "accuracy", "accuracy_ci95", "delta", "delta_ci95", "paired", "macro_f1", "macro_f1_ci95")


def _comparison_columns(by: str) -> list[str]:
    """compare_methods' columns, in order."""
    return [by, "rank", *FIGURES, "seconds"]


def _method_summaries(rows: pd.DataFrame, by: str, confidence: float) -> dict:
    """Per method (sorted by name): its episode count, mean accuracy and macro F1 with their CIs, mean seconds."""
    records = {}
    for name, g in rows.groupby(by, sort=True):
        a, a_ci = mean_ci(g["accuracy"], confidence)
        f, f_ci = mean_ci(g["macro_f1"], confidence)
        records[name] = {
            by: name,
            "episodes": len(g),
            "accuracy": a,
            "accuracy_ci95": a_ci,
            "macro_f1": f,
            "macro_f1_ci95": f_ci,
            "seconds": float(g["seconds"].mean()) if "seconds" in g else math.nan,
        }
    return records


def _rank_against_best(records: dict, acc: pd.DataFrame, confidence: float) -> list:
    """The methods best mean accuracy first; in place, each record gets its paired difference to the best
    (delta, delta_ci95, paired) and its rank (`tie_ranks`). `acc`: accuracy per episode (rows) and method."""
    order = sorted(records, key=lambda m: (-records[m]["accuracy"], m))
    cache: dict[tuple[str, str], tuple[float, float, int]] = {}

    def diff(m, ref):
        if (m, ref) not in cache:
            cache[(m, ref)] = paired_difference(acc[m], acc[ref], confidence)
        return cache[(m, ref)]

    best = order[0]
    for m in order:
        if m == best:
            records[m].update(delta=0.0, delta_ci95=math.nan, paired=records[m]["episodes"])
        else:
            d, d_ci, n = diff(m, best)
            records[m].update(delta=d, delta_ci95=d_ci, paired=n)
    ranks = tie_ranks(order, lambda m, leader: _includes_zero(*diff(m, leader)[:2]))
    for m in order:
        records[m]["rank"] = ranks[m]
    return order


def compare_methods(rows: pd.DataFrame, by: str = "method", confidence: float = 0.95) -> pd.DataFrame:
    """One line per method for the rows of ONE episode stream (one task, ways, shots, queries, manifest).

    Columns: `by`, episodes, accuracy, accuracy_ci95, macro_f1, macro_f1_ci95, delta (mean paired difference
    in accuracy to the best method, on the episodes both answered; 0 for the best), delta_ci95, paired (the
    number of those shared episodes), rank (see `tie_ranks`), seconds (mean per episode). Sorted by rank,
    then mean accuracy. Each (method, episode) must occur once.
    """
    if rows.empty:
        return pd.DataFrame(columns=_comparison_columns(by))
    if rows.duplicated([by, "episode"]).any():
        raise ValueError("compare_methods: a (method, episode) pair occurs twice; merge and deduplicate first")
    acc = rows.pivot(index="episode", columns=by, values="accuracy").sort_index()
    records = _method_summaries(rows, by, confidence)
    order = _rank_against_best(records, acc, confidence)
    table = pd.DataFrame([records[m] for m in order])
    table = table.sort_values(["rank", "accuracy", by], ascending=[True, False, True], kind="stable")
    return table[_comparison_columns(by)].reset_index(drop=True)


def class_accuracy(rows: pd.DataFrame, by: str = "method", confidence: float = 0.95) -> pd.DataFrame:
    """Mean per-class accuracy (recall) over the episodes a class appears in, per (`by`, class).

    Reads the '|'-joined `classes` (names escaped, see scoring.join_labels) and `class_accuracy` columns of
    result rows (aligned: episode position i).
    Columns: `by`, class, accuracy, ci95, episodes.
    """
    names, values, who = [], [], []
    for method, classes, accs in zip(rows[by], rows["classes"].astype(str), rows["class_accuracy"].astype(str)):
        cs, vs = split_labels(classes), accs.split("|")
        if len(cs) != len(vs):
            raise ValueError(f"class_accuracy has {len(vs)} values for {len(cs)} classes ({classes!r})")
        names += cs
        values += [float(v) for v in vs]
        who += [method] * len(cs)
    long = pd.DataFrame({by: who, "class": names, "accuracy": values})
    records = []
    for (method, name), g in long.groupby([by, "class"], sort=True):
        m, ci = mean_ci(g["accuracy"].dropna(), confidence)
        records.append(
            {by: method, "class": name, "accuracy": m, "ci95": ci, "episodes": int(g["accuracy"].notna().sum())}
        )
    return pd.DataFrame(records, columns=[by, "class", "accuracy", "ci95", "episodes"])


def summarize(
    frame: pd.DataFrame,
    by: list[str],
    metrics=("accuracy",),
    count: str = "n",
    unique: str | None = None,
    extra: dict | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One line per `by` group: for each metric its mean and t-based CI half-width (`<metric>_ci95`), the number
    of rows (`count`), and `extra` aggregations ({column: (source column, pandas aggregation)}). With `unique`
    (episode, seed), each group must hold each of its values once (ValueError otherwise)."""
    by = list(by)
    if unique is not None and frame.duplicated(by + [unique]).any():
        raise ValueError(f"summarize: one row per {unique} and group expected")
    records = []
    for values, g in frame.groupby(by, sort=True):
        record = dict(zip(by, values if isinstance(values, tuple) else (values,)))
        for metric in metrics:
            record[metric], record[f"{metric}_ci95"] = mean_ci(g[metric], confidence)
        record[count] = len(g)
        for name, (column, how) in (extra or {}).items():
            record[name] = g[column].agg(how)
        records.append(record)
    return pd.DataFrame(records)


def summarize_episodes(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (task, shots, ways, method): mean accuracy and macro-F1 with 95% CI, episodes, seconds, and
    whether the method is transductive."""
    extra = {"seconds": ("seconds", "sum")}
    if "transductive" in rows:
        extra["transductive"] = ("transductive", "max")
    summary = summarize(
        rows, ["task", "shots", "ways", "method"], ("accuracy", "macro_f1"), count="episodes", extra=extra
    )
    for column in ("shots", "ways"):
        summary[column] = summary[column].astype(int)
    summary["seconds"] = summary["seconds"].astype(float)
    return summary


def pm(
    mean: float, half: float | None = None, signed: bool = False, digits: int = 2, undefined: str | None = None
) -> str:
    """A fraction as a percentage with its CI half-width: "61.27 ± 1.20". "n/a" for an undefined mean; an
    undefined half-width (one value) is left out, or written as `undefined`."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = f"{100 * mean:+.{digits}f}" if signed else f"{100 * mean:.{digits}f}"
    if half is None:
        return text
    if math.isnan(half):
        return text if undefined is None else f"{text} ± {undefined}"
    return f"{text} ± {100 * half:.{digits}f}"
