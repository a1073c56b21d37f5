"""What the transductive methods share: their base class, per-row feature transforms and BD-CSPN's prototype
rectification (which LaplacianShot reuses).

A transductive method (`transductive = True`) may use the *features* of its own episode's query set, never
their labels and never another episode's rows. The harness hands `predict` the whole query of an episode at
once (a fixed-K test pool, a scene's windows in `bench map`) and `predict_batch` several episodes side by side;
every computation here keeps episodes apart (per-episode reductions, per-episode stopping rules), so that an
episode's scores do not depend on which other episodes share its batch (tests/test_transductive.py checks it,
and that scores do not move when rows outside the episode change).

Rows of `self.features` are transformed one by one in `prepare` (L2 normalisation, the base-pool centring of
CL2N, the power transform): a row's transform never depends on another target row.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from methods.base import BatchedMethod, Context
from methods.devices import to_numpy


def power_transform(x: torch.Tensor, beta: float, eps: float = 1e-6) -> torch.Tensor:
    """PT-MAP's power transform (Hu et al. 2021, eq. 1): (x + eps)^beta, then L2-normalised. Negative values
    (backbones whose features do not end in a ReLU) are set to 0 first, as easyfsl does: the transform is
    defined for non-negative features only."""
    return F.normalize((x.clamp_min(0) + eps).pow(beta), dim=-1)


def one_hot(y: torch.Tensor, n_way: int, dtype: torch.dtype) -> torch.Tensor:
    return F.one_hot(y.long(), n_way).to(dtype)


def support_means(support: torch.Tensor, y: torch.Tensor, n_way: int) -> torch.Tensor:
    """(E, N, D) class means of (E, n, D) support rows labelled (E, n)."""
    hot = one_hot(y, n_way, support.dtype)  # (E, n, N)
    return (hot.transpose(1, 2) @ support) / hot.sum(1).unsqueeze(-1)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(E, m, N) cosine similarities of rows a (E, m, D) to rows b (E, N, D)."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(1, 2)


def sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(E, m, N) squared Euclidean distances of rows a (E, m, D) to rows b (E, N, D)."""
    return ((a**2).sum(-1, keepdim=True) - 2 * a @ b.transpose(1, 2) + (b**2).sum(-1).unsqueeze(1)).clamp_min(0)


def rectify(
    support: torch.Tensor, y: torch.Tensor, query: torch.Tensor, n_way: int, epsilon: float = 10.0, top: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """BD-CSPN (Liu et al. 2020): (rectified prototypes (E, N, D), shifted queries (E, m, D)).

    Cross-class bias: every query is shifted by the mean support feature minus the mean query feature.
    Intra-class bias: each query is pseudo-labelled with its most cosine-similar support class mean (top > 0:
    only the `top` most similar queries of each class keep their pseudo-label); a class's prototype is the
    sum of its support and pseudo-labelled rows weighted by softmax over those rows of epsilon x their cosine
    similarity to the class mean (eq. 4)."""
    query = query + (support.mean(1, keepdim=True) - query.mean(1, keepdim=True))
    means = support_means(support, y, n_way)
    cos_q = cosine(query, means)
    members_q = one_hot(cos_q.argmax(-1), n_way, torch.bool)
    if top > 0:
        ranked = torch.where(members_q, cos_q, -torch.inf)
        kept = torch.zeros_like(members_q).scatter_(1, ranked.topk(min(top, ranked.shape[1]), dim=1).indices, True)
        members_q &= kept
    rows = torch.cat([support, query], 1)
    members = torch.cat([one_hot(y, n_way, torch.bool), members_q], 1)  # (E, n + m, N)
    logits = torch.where(members, epsilon * torch.cat([cosine(support, means), cos_q], 1), -torch.inf)
    weights = torch.softmax(logits, dim=1)  # over each class's rows
    return weights.transpose(1, 2) @ rows, query


class TransductiveMethod(BatchedMethod):
    """A frozen-feature method that answers an episode from its support and the features of its whole query.

    Subclasses define `transform(features)` (per row, in prepare; default: none) and `episodes(support (E, n, D),
    support_y (E, n), query (E, m, D), n_way) -> (E, m, N)` scores, every episode on its own."""

    transductive = True

    def prepare(self, ctx: Context) -> None:
        super().prepare(ctx)
        self.prepare_transform(ctx)
        with torch.no_grad():  # not inference mode: TIM takes gradients through rows copied from these
            self.features = self.transform(self.features)

    def prepare_transform(self, ctx: Context) -> None:
        """What `transform` needs from the base pool (e.g. its mean), before the features are transformed."""

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        return features

    def episodes(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, n_way: int) -> torch.Tensor:
        raise NotImplementedError

    def fit(self, support_idx, support_y, n_way, rng):
        self.support = (
            torch.as_tensor(np.array(support_idx), device=self.device),
            torch.as_tensor(np.array(support_y), device=self.device),
            n_way,
        )

    def predict(self, query_idx):
        support_idx, support_y, n_way = self.support
        query = torch.as_tensor(np.array(query_idx), device=self.device)
        with torch.inference_mode():
            return to_numpy(self.predict_batch(support_idx[None], support_y[None], query[None], n_way)[0].float())

    def predict_batch(
        self, support_idx: torch.Tensor, support_y: torch.Tensor, query_idx: torch.Tensor, n_way: int
    ) -> torch.Tensor:
        """(E, m, N) scores; each episode reads its own support and query rows only."""
        with torch.inference_mode(False):  # rows read in inference mode are copied out of it (TIM takes gradients)
            support = self.features[support_idx.reshape(-1)].reshape(*support_idx.shape, -1).clone()
            query = self.features[query_idx.reshape(-1)].reshape(*query_idx.shape, -1).clone()
            return self.episodes(support, support_y.clone(), query, n_way).detach()
