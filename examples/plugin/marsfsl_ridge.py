"""An out-of-tree marsfsl method: ridge regression to one-hot targets on L2-normalised frozen features.

Installed with `pip install examples/plugin`, it is found through the entry point in pyproject.toml; the suite
itself is not edited. Try: `bench list` (shows `ridge`, from `plugin marsfsl-ridge`), then
`bench run --method ridge --method ridge:alpha=10 --shots 1,5`.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from methods.base import FeatureMethod


class RidgeProbe(FeatureMethod):
    """Ridge classifier (closed form) on L2-normalised frozen ImageNet features."""

    description = "Ridge regression to one-hot targets on L2-normalised frozen features (example plugin)"

    def __init__(self, alpha: float = 1.0):
        self.alpha = float(alpha)
        if not self.alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")

    def fit_features(self, x: torch.Tensor, y: torch.Tensor, n_way: int, rng) -> None:
        x = F.normalize(x.double(), dim=1)
        targets = F.one_hot(y.long(), n_way).double()
        self.x_mean, self.bias = x.mean(0), targets.mean(0)
        xc, yc = x - self.x_mean, targets - self.bias
        # Dual form, as there are far fewer support images than feature dimensions:
        # W = Xc^T (Xc Xc^T + alpha I)^-1 Yc, the minimiser of |Xc W - Yc|^2 + alpha |W|^2.
        gram = xc @ xc.T + self.alpha * torch.eye(len(xc), dtype=xc.dtype)
        self.weight = xc.T @ torch.linalg.solve(gram, yc)

    def predict_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x.double(), dim=1)
        return ((x - self.x_mean) @ self.weight + self.bias).float()
