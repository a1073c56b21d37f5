"""Prototypical networks (Snell et al. 2017) over frozen features, optionally meta-trained on the base pool.

Without meta-training: nearest class mean in squared Euclidean distance of the frozen ImageNet features.
With `metatrain=True`: a linear embedding on top of the frozen features is trained with the prototypical
loss on N-way episodes drawn from the base pool (cached on disk), then used the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from common.errors import UserError
from methods.base import Context
from methods.cache import cache_key
from methods.devices import CPU, cpu_state, to_numpy
from methods.nearest_mean import NearestClassMean, check_power, class_means, neg_sq_distances
from methods.registry import register_method
from tasks.episodes import PoolIndex, sample_episode

# Keys meta-trained embeddings: bump when their arithmetic changes (class means come from
# nearest_mean.class_means, whose rounding another way of averaging would not reproduce)
EMBED_VERSION = 2


def train_embedding(
    features: np.ndarray,
    index: PoolIndex,
    n_way: int,
    n_shot: int,
    n_query: int,
    steps: int,
    lr: float,
    rng: np.random.Generator,
    device: torch.device = CPU,
) -> nn.Module:
    """Episodic prototypical training of a linear embedding on episodes of the base pool (`index`), on
    `device` (the features are sent there once; each episode's labels are sent as it is drawn)."""
    eligible = index.eligible(n_shot, n_query)
    if len(eligible) < 2:
        raise UserError(
            f"protonet meta-training needs two base-pool classes with {n_shot}+{n_query} images in "
            "separate scenes; lower train_shots/train_queries or run without metatrain"
        )
    n_way = min(n_way, len(eligible))
    x_all = torch.from_numpy(features).to(device)
    embed = nn.Linear(x_all.shape[1], x_all.shape[1])
    nn.init.eye_(embed.weight)
    nn.init.zeros_(embed.bias)
    embed.to(device)
    opt = torch.optim.Adam(embed.parameters(), lr=lr)
    for _ in range(steps):
        ep = sample_episode(index, n_way, n_shot, n_query, rng, eligible)
        s_idx, q_idx = (torch.from_numpy(i).to(device) for i in (ep.support_idx, ep.query_idx))
        s, q = embed(x_all[s_idx]), embed(x_all[q_idx])
        support_y = torch.from_numpy(ep.support_y).to(device)
        logits = neg_sq_distances(q, class_means(s, torch.arange(len(support_y), device=device), support_y, n_way))
        loss = nn.functional.cross_entropy(logits / x_all.shape[1] ** 0.5, torch.from_numpy(ep.query_y).to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return embed.eval()


@register_method("protonet")
class ProtoNet(NearestClassMean):
    description = (
        "Nearest class mean of frozen features (squared Euclidean); metatrain=True adds base-pool episodic "
        "training, power=0.5 PT-MAP's power transform"
    )

    def __init__(
        self,
        metatrain: bool = False,
        steps: int = 2000,
        lr: float = 1e-4,
        train_way: int = 5,
        train_shots: int = 5,
        train_queries: int = 10,
        power: float = 0.0,
    ):
        if not isinstance(metatrain, bool):
            raise ValueError(f"metatrain must be true or false, got {metatrain!r}")
        if min(int(steps), int(train_way) - 1, int(train_shots), int(train_queries)) < 1 or float(lr) <= 0:
            raise ValueError("steps, lr, train_shots and train_queries must be positive and train_way at least 2")
        self.metatrain, self.steps, self.lr = metatrain, int(steps), float(lr)
        self.train_way, self.train_shots, self.train_queries = int(train_way), int(train_shots), int(train_queries)
        self.embed = None
        self.power = check_power(power)

    def prepare(self, ctx: Context) -> None:
        super().prepare(ctx)
        if not self.metatrain:
            return
        key = cache_key("protonet-embed", EMBED_VERSION, ctx.task_key, ctx.features_key(), self.config(), ctx.seed)

        def train():
            embed = train_embedding(
                to_numpy(self.features),
                ctx.base_episodes(),
                self.train_way,
                self.train_shots,
                self.train_queries,
                self.steps,
                self.lr,
                np.random.default_rng([ctx.seed, 17]),
                ctx.device,
            )
            return cpu_state(embed.state_dict())

        state, _ = ctx.cache.state_dict("protonet", key, train)
        self.embed = nn.Linear(self.features.shape[1], self.features.shape[1]).to(ctx.device)
        self.embed.load_state_dict(state)
        self.embed.eval()
        with torch.inference_mode():
            self.features = self.embed(self.features)
