"""LaplacianShot (Ziko, Dolz, Granger and Ben Ayed, "Laplacian Regularized Few-Shot Learning", ICML 2020).

Features are centred on the base-pool mean and L2-normalised (CL2N, as the paper's code). Prototypes are
BD-CSPN's rectified ones (`rectify=true`, the paper's default; methods/transductive.rectify) or the support
class means. Soft assignments Y of the queries minimise sum_q y_q . a_q - lmd sum_{p,q} w_pq y_p . y_q +
entropy, where a_q are the squared distances from query q to the prototypes and w_pq = 1 when p is one of
the knn - 1 nearest other queries of q (the kNN graph of the query features, knn counting q itself, as the
paper's code builds it). The bound optimiser iterates y_q <- softmax(-a_q + lmd sum_p w_qp y_p) at most
`iterations` times, until the bound's relative change is at most 1e-6 (each episode stops on its own).
Defaults: knn 3 and 20 iterations as published; lmd 0.7, the value the authors' validation chose for
ResNet-18 1-shot on mini-ImageNet (the paper tunes it on validation episodes: `bench tune` does the same).
Scores are log Y.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from methods.base import Context
from methods.registry import register_method
from methods.transductive import TransductiveMethod, rectify, sq_distances, support_means

ROWS_PER_BLOCK = 2048  # the kNN graph of a whole scene's windows is built this many queries at a time


def neighbours(query: torch.Tensor, k: int) -> torch.Tensor:
    """(E, m, k) indices of each query's k nearest other queries of its episode (squared Euclidean)."""
    k = min(k, query.shape[1] - 1)
    if k < 1:
        return query.new_zeros((*query.shape[:2], 0), dtype=torch.long)
    blocks = []
    for start in range(0, query.shape[1], ROWS_PER_BLOCK):
        block = query[:, start : start + ROWS_PER_BLOCK]
        d = sq_distances(block, query)
        rows = torch.arange(block.shape[1], device=query.device)
        d[:, rows, rows + start] = torch.inf  # not its own neighbour
        blocks.append(d.topk(k, dim=-1, largest=False).indices)
    return torch.cat(blocks, 1)


def propagate(y: torch.Tensor, nbrs: torch.Tensor) -> torch.Tensor:
    """(E, m, N): sum of the neighbours' assignments (the kNN kernel times Y)."""
    index = nbrs.reshape(nbrs.shape[0], -1, 1).expand(-1, -1, y.shape[-1])
    return y.gather(1, index).reshape(*nbrs.shape, y.shape[-1]).sum(2)


@register_method("laplacianshot")
class LaplacianShot(TransductiveMethod):
    description = "LaplacianShot (transductive): kNN-graph Laplacian regularised assignments to rectified prototypes"

    def __init__(self, knn: int = 3, lmd: float = 0.7, iterations: int = 20, rectify: bool = True):
        if int(knn) < 1 or float(lmd) < 0 or int(iterations) < 1 or not isinstance(rectify, bool):
            raise ValueError("knn and iterations must be positive, lmd non-negative and rectify true or false")
        self.knn, self.lmd, self.iterations, self.rectify = int(knn), float(lmd), int(iterations), rectify

    def prepare_transform(self, ctx: Context) -> None:
        base_idx, _ = ctx.base_pool()
        self.base_mean = self.features[torch.as_tensor(base_idx, device=self.device)].mean(0)

    def transform(self, features):
        return F.normalize(features - self.base_mean, dim=-1)

    def episodes(self, support, support_y, query, n_way):
        if self.rectify:
            protos, query = rectify(support, support_y, query, n_way)
        else:
            protos = support_means(support, support_y, n_way)
        unary = sq_distances(query, protos)
        nbrs = neighbours(query, self.knn - 1)
        logits = -unary
        y = torch.softmax(logits, -1)
        active = torch.ones(len(query), dtype=torch.bool, device=query.device)
        old = torch.full((len(query),), torch.inf, dtype=query.dtype, device=query.device)
        for i in range(self.iterations):
            new_logits = -unary + self.lmd * propagate(y, nbrs)
            new_y = torch.softmax(new_logits, -1)
            keep = active.view(-1, 1, 1)
            logits, y = torch.where(keep, new_logits, logits), torch.where(keep, new_y, y)
            energy = (y * y.clamp_min(1e-20).log() + unary * y - self.lmd * propagate(y, nbrs) * y).sum((1, 2))
            if i > 1:
                active &= (energy - old).abs() > 1e-6 * old.abs()
            old = torch.where(active, energy, old)
            if not active.any():
                break
        return torch.log_softmax(logits, -1)
