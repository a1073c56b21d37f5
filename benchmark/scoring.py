"""The one place that turns a method's scores into accuracy, F1 and per-class accuracy.

Episodes (one at a time or a chunk at once), the fixed-K protocol and maps all score here, from class
counts: for each class c, tp (queries of c predicted c), true (queries of c) and predicted (queries predicted
c). F1 of a class is 2 tp / (true + predicted), 0 where both are 0 (scikit-learn's `zero_division=0`); macro-F1
is its plain mean over the classes, weighted F1 its mean weighted by `true` (`f1_score(average="weighted")`).
These are the operations scikit-learn does, in the same order, so the numbers are the same bits
(tests/test_scoring.py checks it), at microseconds per episode instead of a millisecond.

Scores are checked once, here: their shape, that they are real numbers and that every value is finite; a failure
names the method.
"""

from __future__ import annotations

import numpy as np

from common.errors import UserError

LABEL_SEPARATOR = "|"


class ScoreError(UserError):
    """A method returned scores that cannot be scored (wrong shape, NaN or infinite values)."""


def check_scores(scores, expected: tuple[int, ...], what: str = "", axes: str = "") -> np.ndarray:
    """`scores` as an array of shape `expected` with finite values, else a one-line ScoreError; `what` names
    who returned them ("method x"), where the caller does not say it around the error."""
    what = f"{what} returned" if what else "returned"
    scores = np.asarray(scores)
    if scores.shape != tuple(expected):
        raise ScoreError(
            f"{what} scores of shape {tuple(scores.shape)}; expected {tuple(expected)}" + (f" ({axes})" if axes else "")
        )
    if not (np.issubdtype(scores.dtype, np.integer) or np.issubdtype(scores.dtype, np.floating)):
        # complex scores have no order: argmax would rank them by their real part and drop the rest silently
        raise ScoreError(f"{what} scores of type {scores.dtype}; expected real numbers")
    finite = np.isfinite(scores)
    if not finite.all():
        bad = scores[~finite]
        raise ScoreError(f"{what} {bad.size} non-finite scores (e.g. {bad.flat[0]}); expected finite values")
    return scores


def class_counts(predicted: np.ndarray, truth: np.ndarray, n_classes: int):
    """(tp, true, predicted), each (E, n_classes) integer counts, for (E, m) predicted and true labels."""
    predicted, truth = np.atleast_2d(predicted), np.atleast_2d(truth)
    rows = np.arange(predicted.shape[0])[:, None] * n_classes
    size = predicted.shape[0] * n_classes
    shape = (predicted.shape[0], n_classes)
    tp = np.bincount((rows + truth)[predicted == truth], minlength=size).reshape(shape)
    n_true = np.bincount((rows + truth).ravel(), minlength=size).reshape(shape)
    n_pred = np.bincount((rows + predicted).ravel(), minlength=size).reshape(shape)
    return tp, n_true, n_pred


def class_f1(tp: np.ndarray, n_true: np.ndarray, n_pred: np.ndarray) -> np.ndarray:
    denominator = n_true + n_pred
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2.0 * tp / denominator
    return np.where(denominator > 0, f1, 0.0)


def macro_f1(tp, n_true, n_pred) -> np.ndarray:
    return class_f1(tp, n_true, n_pred).mean(axis=-1)


def weighted_f1(tp, n_true, n_pred) -> np.ndarray:
    total = n_true.sum(axis=-1)
    weighted = (class_f1(tp, n_true, n_pred) * n_true).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weighted / total, 0.0)


def join_labels(names) -> str:
    """Class names as one field: joined by '|', with '\\' and '|' inside a name escaped by '\\'."""
    return LABEL_SEPARATOR.join(_escape(n) for n in names)


def _escape(name) -> str:
    return str(name).replace("\\", "\\\\").replace(LABEL_SEPARATOR, "\\" + LABEL_SEPARATOR)


def split_labels(text: str) -> list[str]:
    """The names `join_labels` joined."""
    if "\\" not in text:
        return text.split(LABEL_SEPARATOR)
    names, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == LABEL_SEPARATOR:
            names.append("".join(current))
            current = []
        else:
            current.append(ch)
    names.append("".join(current))
    return names


def score_episodes(scores, truth: np.ndarray, classes: np.ndarray, class_names, what: str = "") -> list[dict]:
    """One results dict per episode (classes, accuracy, macro_f1, class_accuracy, n_query) for (E, m, N) scores,
    (E, m) true episode labels 0..N-1 and (E, N) dataset label ids of the episodes' classes."""
    truth = np.atleast_2d(np.asarray(truth))
    classes = np.atleast_2d(np.asarray(classes))
    n_episodes, m = truth.shape
    n_way = classes.shape[1]
    scores = check_scores(scores, (n_episodes, m, n_way), what, "episodes x queries x ways")
    pred = scores.argmax(axis=2)
    tp, n_true, n_pred = class_counts(pred, truth, n_way)
    accuracy = tp.sum(axis=1) / m
    macro = macro_f1(tp, n_true, n_pred)
    escaped = [_escape(n) for n in class_names]
    names = [LABEL_SEPARATOR.join([escaped[c] for c in row]) for row in classes.tolist()]
    shares: dict[tuple[int, int], str] = {}  # a few distinct (tp, true) pairs: format each once

    def share(t: int, n: int) -> str:
        text = shares.get((t, n))
        if text is None:
            text = shares[(t, n)] = f"{t / n:.6g}" if n else "nan"
        return text

    recall = [
        LABEL_SEPARATOR.join([share(t, n) for t, n in zip(t_row, n_row)])
        for t_row, n_row in zip(tp.tolist(), n_true.tolist())
    ]
    return [
        {"classes": c, "accuracy": a, "macro_f1": f, "class_accuracy": r, "n_query": m}
        for c, a, f, r in zip(names, accuracy.tolist(), macro.tolist(), recall)
    ]


def score_episode(episode, scores, class_names, what: str = "") -> dict:
    """score_episodes for one episode (an object with query_y and classes) and its (m, N) scores."""
    scores = check_scores(scores, (len(episode.query_y), len(episode.classes)), what, "queries x ways")
    return score_episodes(scores[None], episode.query_y[None], episode.classes[None], class_names, what)[0]


def score_fixed_k(test_y: np.ndarray, scores, n_classes: int, what: str = "") -> dict:
    """accuracy, weighted_f1 (as Mars-Bench reports), macro_f1 of (n_test, n_classes) scores."""
    test_y = np.asarray(test_y)
    scores = check_scores(scores, (len(test_y), n_classes), what, "test images x classes")
    pred = scores.argmax(axis=1)
    tp, n_true, n_pred = class_counts(pred, test_y, n_classes)
    return {
        "accuracy": float((pred == test_y).mean()),
        "weighted_f1": float(weighted_f1(tp, n_true, n_pred)[0]),
        "macro_f1": float(macro_f1(tp, n_true, n_pred)[0]),
    }


def binary_scores(predicted: np.ndarray, truth: np.ndarray, scored: np.ndarray | None = None) -> dict:
    """Precision, recall and F1 of the positive class over the scored windows (bool arrays)."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    scored = np.ones_like(truth) if scored is None else np.asarray(scored, bool)
    tp = int((predicted & truth & scored).sum())
    fp = int((predicted & ~truth & scored).sum())
    fn = int((~predicted & truth & scored).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "positives": int((truth & scored).sum()),
        "scored": int(scored.sum()),
    }


class MethodFailed(UserError):
    """A method raised, or returned scores that cannot be scored; names the method, the stage and the episode."""

    def __init__(self, label: str, stage: str, where: str, exc: BaseException | str):
        reason = exc if isinstance(exc, str) else describe(exc)
        super().__init__(f"method {label} failed in {stage}{where}: {reason}")
        self.label, self.stage, self.where, self.reason = label, stage, where, reason

    def at(self, place: str) -> MethodFailed:
        """The same failure, with where it happened in a loop the method does not know of (" at K=5, draw seed
        2") added to where the method failed."""
        if getattr(self, "reason", None) is None:  # rebuilt from its message: only the message is known
            return _rebuilt_failure(type(self), f"{self}{place}", self.label)
        return type(self)(self.label, self.stage, f"{self.where}{place}", self.reason)

    def __reduce__(self):
        # rebuilt from its message: it travels from a Ray worker, where the method failed, to the driver, which
        # reports it (the default, MethodFailed(*args), cannot rebuild it from the message alone)
        return _rebuilt_failure, (type(self), str(self), self.label)


def _rebuilt_failure(cls, message: str, label: str) -> MethodFailed:
    failure = cls.__new__(cls)
    UserError.__init__(failure, message)
    failure.label = label
    return failure


def describe(exc: BaseException) -> str:
    """What a method raised, in a MethodFailed's words."""
    if isinstance(exc, (ScoreError, Escaped)):
        return str(exc)
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, SystemExit):
        detail += " (it tried to end the process; a method returns scores or raises)"
    return detail


class Escaped(Exception):
    """A SystemExit or KeyboardInterrupt that method code raised in a Ray worker outside benchmark.runner.blamed,
    as an ordinary exception: Ray would take the one for the worker's exit (and retry the task on a new
    worker) and the other for the task's cancellation. Its message describes the original."""

    @classmethod
    def of(cls, exc: BaseException) -> Escaped:
        return cls(describe(exc))
