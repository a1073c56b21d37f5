"""SimpleShot (Wang et al. 2019): nearest class mean after centring and L2-normalising the features (CL2N).

The centring mean is the mean frozen feature of the task's *base pool*, computed once in `prepare`; it never
depends on an episode's support or query. Scores are negative squared Euclidean distances to the class means
of the transformed support features. `norm="l2n"` (L2 only) and `norm="un"` (raw features) are the paper's
other two variants. `power=0.5` applies PT-MAP's power transform to every row before the centring.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from methods.base import Context
from methods.nearest_mean import NearestClassMean, check_power
from methods.registry import register_method

NORMS = ("cl2n", "l2n", "un")


@register_method("simpleshot")
class SimpleShot(NearestClassMean):
    description = (
        "SimpleShot: nearest class mean of frozen features centred on the base-pool mean and L2-normalised (CL2N)"
    )

    def __init__(self, norm: str = "cl2n", power: float = 0.0):
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        self.norm = norm
        self.power = check_power(power)

    def prepare(self, ctx: Context) -> None:
        super().prepare(ctx)
        base_idx, _ = ctx.base_pool()
        self.base_mean = self.features[torch.as_tensor(base_idx, device=self.device)].mean(0)
        self.features = self.transform(self.features)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "cl2n":
            x = x - self.base_mean
        return F.normalize(x, dim=-1) if self.norm in ("cl2n", "l2n") else x
