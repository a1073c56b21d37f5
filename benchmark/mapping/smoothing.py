"""Smoothing of a class-probability map over neighbouring windows: none, majority filter, Potts MRF.

Windows labelled -1 (no class: mostly no-data) keep -1, are never updated and count for no class among
their neighbours.
"""

from __future__ import annotations

import numpy as np

from common.errors import UserError, closest

SMOOTHERS = ("none", "majority", "mrf")
DEFAULT_STRENGTH = {"none": 0.0, "majority": 1.0, "mrf": 1.0}
PROBABILITY_FLOOR = 1e-3  # -log p is capped at 6.9 in the MRF, so one confident window cannot veto its neighbours


def _onehot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(..., C) int32 indicator of each label; a -1 (no class) is all zeros."""
    return np.eye(n_classes + 1, dtype=np.int32)[labels][..., :n_classes]


def argmax_labels(probs: np.ndarray) -> np.ndarray:
    """(ny, nx) argmax of (ny, nx, C) probabilities; -1 where a window's probabilities are NaN (no class)."""
    valid = ~np.isnan(probs).any(-1)
    return np.where(valid, np.nan_to_num(probs, nan=0.0).argmax(-1), -1)


def _neighbour_counts(labels: np.ndarray, n_classes: int, radius: int = 1) -> np.ndarray:
    """(ny, nx, C): how many windows of each class lie in the (2r+1)^2 neighbourhood, the window excluded."""
    ny, nx = labels.shape
    onehot = np.zeros((ny + 2 * radius, nx + 2 * radius, n_classes), np.int32)
    onehot[radius : radius + ny, radius : radius + nx] = _onehot(labels, n_classes)
    counts = np.zeros((ny, nx, n_classes), np.int32)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy or dx:
                counts += onehot[radius + dy : radius + dy + ny, radius + dx : radius + dx + nx]
    return counts


def majority_filter(labels: np.ndarray, n_classes: int, radius: int = 1) -> np.ndarray:
    """Each window takes the most frequent class of its (2r+1)^2 neighbourhood (itself included); on a tie
    it keeps its own class if that is among the most frequent, else the lowest tied class."""
    counts = _neighbour_counts(labels, n_classes, radius)
    counts = counts + _onehot(labels, n_classes)
    best = counts.max(-1)
    keep = counts[np.arange(labels.shape[0])[:, None], np.arange(labels.shape[1])[None, :], labels] == best
    return np.where(labels < 0, -1, np.where(keep, labels, counts.argmax(-1)))


def mrf_smooth(probs: np.ndarray, beta: float, max_sweeps: int = 30) -> np.ndarray:
    """Potts Markov random field on the window grid, solved by iterated conditional modes (ICM).

    Energy: sum over windows of -log max(p, floor) of its class, plus `beta` for every pair of 8-neighbours
    with different classes. Starts from the argmax; windows are updated in four interleaved sublattices
    (no two updated together are neighbours), so every sweep lowers the energy and ICM converges."""
    ny, nx, n_classes = probs.shape
    labels = argmax_labels(probs)
    valid = labels >= 0
    unary = -np.log(np.maximum(np.nan_to_num(probs.astype(np.float64), nan=1.0), PROBABILITY_FLOOR))
    rows, cols = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    sublattices = [(rows % 2 == a) & (cols % 2 == b) for a in (0, 1) for b in (0, 1)]
    for _ in range(max_sweeps):
        changed = False
        for mask in sublattices:
            counts = _neighbour_counts(labels, n_classes)
            energy = unary + beta * (counts.sum(-1, keepdims=True) - counts)
            current = np.take_along_axis(energy, labels[..., None], -1)[..., 0]
            best = energy.argmin(-1)
            better = mask & valid & (energy.min(-1) < current - 1e-12)
            if better.any():
                labels = np.where(better, best, labels)
                changed = True
        if not changed:
            break
    return labels


def smooth(probs: np.ndarray, method: str = "none", strength: float | None = None) -> np.ndarray:
    """(ny, nx) class labels from (ny, nx, C) probabilities, optionally smoothed over neighbouring windows.

    Windows whose probabilities are NaN have no class (-1). none: argmax. majority: majority filter of radius `strength` windows (integer >= 1).
    mrf: Potts MRF with pairwise weight `strength` (beta >= 0; 0 is the argmax)."""
    if method not in SMOOTHERS:
        raise UserError(f"unknown smoothing {method!r}{closest(method, SMOOTHERS)}; known: {', '.join(SMOOTHERS)}")
    strength = DEFAULT_STRENGTH[method] if strength is None else float(strength)
    if method == "none":
        return argmax_labels(probs)
    if method == "majority":
        if strength < 1 or strength != int(strength):
            raise UserError(
                f"--smooth-strength for majority is a radius in windows (an integer >= 1), got {strength:g}"
            )
        return majority_filter(argmax_labels(probs), probs.shape[-1], int(strength))
    if strength < 0 or not np.isfinite(strength):
        raise UserError(f"--smooth-strength for mrf is a weight >= 0, got {strength:g}")
    return mrf_smooth(probs, strength)
