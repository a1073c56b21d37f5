"""Scores of a map against per-window truth."""
from __future__ import annotations

import numpy as np


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
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
            "positives": int((truth & scored).sum()), "scored": int(scored.sum())}
