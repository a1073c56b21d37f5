"""k-nearest neighbours (cosine similarity) on frozen ImageNet features.

Each query takes the k most similar support images (k = min(k, support size)); ties in similarity go to the
earlier support image (stable sort), so the result never depends on anything but the inputs. A class's score
is its vote fraction plus sum-of-neighbour-similarities / (4 k^2): that term lies in [-1/(4k), 1/(4k)], so it
orders classes with equal votes by how similar their neighbours are and never overturns a vote difference
(at least 1/k). Remaining exact ties go to the lower class index (argmax).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from methods.base import FeatureMethod
from methods.registry import register_method


@register_method("knn")
class KNN(FeatureMethod):
    description = "k-nearest neighbours (cosine) on frozen ImageNet features; scores = vote fractions"

    def __init__(self, k: int = 1):
        if int(k) < 1:
            raise ValueError(f"k must be a positive integer, got {k}")
        self.k = int(k)

    def fit_features(self, x, y, n_way, rng):
        self.support = F.normalize(x.float(), dim=-1)
        self.support_y = y.long()
        self.n_way = n_way

    def predict_features(self, x):
        sims = F.normalize(x.float(), dim=-1) @ self.support.T  # (m, n)
        k = min(self.k, sims.shape[1])
        order = torch.sort(-sims, dim=1, stable=True).indices[:, :k]  # ties: earlier support image first
        near_sims = sims.gather(1, order)
        votes = F.one_hot(self.support_y[order], self.n_way).to(sims.dtype)  # (m, k, N)
        return votes.sum(1) / k + (votes * near_sims.unsqueeze(-1)).sum(1) / (4 * k * k)
