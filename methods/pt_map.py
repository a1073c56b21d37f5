"""PT-MAP (Hu, Gripon and Pateux, "Leveraging the Feature Distribution in Transfer-based Few-Shot Learning",
ICANN 2021).

Features are power-transformed, (x + 1e-6)^power, and L2-normalised (eq. 1; methods/transductive.power_transform);
per episode, the support and the query are each centred on their own mean and L2-normalised again, as the
paper's code does. Class centres start at the support means; `steps` times, the queries' soft assignments
are the Sinkhorn optimal transport plan of exp(-lam x squared distance) to equal class sizes (rows summing
to 1, columns to queries / classes; up to 1000 iterations until the row sums move by less than 1e-6), and
each centre moves by `alpha` towards the assignment-weighted mean of its support and query features.
Published defaults: power 0.5, lam 10, alpha 0.2, 20 steps. Scores are the log of the final assignments.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from methods.registry import register_method
from methods.transductive import TransductiveMethod, one_hot, power_transform, sq_distances, support_means

SINKHORN_ITERATIONS, SINKHORN_EPSILON = 1000, 1e-6


def sinkhorn(cost: torch.Tensor, lam: float) -> torch.Tensor:
    """(E, m, N) transport plans with row sums 1 and column sums m / N; each episode stops on its own."""
    m, n_way = cost.shape[1], cost.shape[2]
    plan = torch.exp(-lam * cost)
    plan = plan / plan.sum((1, 2), keepdim=True)
    rows = torch.zeros(cost.shape[:2], dtype=cost.dtype, device=cost.device)
    active = torch.ones(len(cost), dtype=torch.bool, device=cost.device)
    for _ in range(SINKHORN_ITERATIONS):
        active &= (rows - plan.sum(2)).abs().amax(1) > SINKHORN_EPSILON
        if not active.any():
            break
        rows = torch.where(active.view(-1, 1), plan.sum(2), rows)
        scaled = plan / rows.unsqueeze(2)
        scaled = scaled * ((m / n_way) / scaled.sum(1, keepdim=True))
        plan = torch.where(active.view(-1, 1, 1), scaled, plan)
    return plan


@register_method("pt-map")
class PTMAP(TransductiveMethod):
    description = "PT-MAP (transductive): power transform, then optimal-transport soft k-means from the support means"

    def __init__(self, power: float = 0.5, lam: float = 10.0, alpha: float = 0.2, steps: int = 20):
        if float(power) <= 0 or float(lam) <= 0 or not 0 < float(alpha) <= 1 or int(steps) < 0:
            raise ValueError("power and lam must be positive, alpha in (0, 1] and steps non-negative")
        self.power, self.lam, self.alpha, self.steps = float(power), float(lam), float(alpha), int(steps)

    def transform(self, features):
        return power_transform(features, self.power)

    def episodes(self, support, support_y, query, n_way):
        support = F.normalize(support - support.mean(1, keepdim=True), dim=-1)
        query = F.normalize(query - query.mean(1, keepdim=True), dim=-1)
        centres = support_means(support, support_y, n_way)
        hot = one_hot(support_y, n_way, support.dtype)
        for _ in range(self.steps):
            plan = sinkhorn(sq_distances(query, centres), self.lam)
            estimate = (hot.transpose(1, 2) @ support + plan.transpose(1, 2) @ query) / (
                hot.sum(1) + plan.sum(1)
            ).unsqueeze(-1)
            centres = centres + self.alpha * (estimate - centres)
        return torch.log(sinkhorn(sq_distances(query, centres), self.lam).clamp_min(1e-30))
