"""Baseline++ (Chen et al. 2019, "A Closer Look at Few-shot Classification"), fine-tuning stage.

A new cosine classifier (scores = scale * cos(feature, class weight)) is trained on the support set's frozen
ImageNet features; the backbone is never updated. Chen et al. also pre-train the backbone on the base classes
with this classifier; here the backbone is the ImageNet one shared by every frozen-feature method, so only
their per-episode stage runs. Defaults: weights drawn from N(0, 0.01) with the episode's generator, then
`steps` full-batch Adam steps (Chen et al. use 100 SGD steps on mini-batches of 4), fixed scale 10.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from methods.base import FeatureMethod, torch_generator
from methods.cosine import CosineClassifier
from methods.registry import register_method


@register_method("baseline-pp")
class BaselinePP(FeatureMethod):
    description = "Baseline++ stage 2: cosine classifier (scale 10) trained with Adam on the support's frozen features"

    def __init__(
        self,
        steps: int = 100,
        lr: float = 0.01,
        scale: float = 10.0,
        learn_scale: bool = False,
        weight_decay: float = 0.0,
    ):
        if int(steps) < 1 or float(lr) <= 0 or float(scale) <= 0:
            raise ValueError("steps, lr and scale must be positive")
        self.steps, self.lr, self.scale = int(steps), float(lr), float(scale)
        self.learn_scale, self.weight_decay = bool(learn_scale), float(weight_decay)

    def fit_features(self, x, y, n_way, rng):
        gen = torch_generator(rng)
        self.head = CosineClassifier(x.shape[1], n_way, scale=self.scale, learn_scale=self.learn_scale).to(x.device)
        with torch.no_grad():
            self.head.weight.copy_(0.01 * torch.randn(self.head.weight.shape, generator=gen))
        opt = torch.optim.Adam(
            [p for p in self.head.parameters() if p.requires_grad], lr=self.lr, weight_decay=self.weight_decay
        )
        for _ in range(self.steps):
            loss = F.cross_entropy(self.head(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    def predict_features(self, x):
        return self.head(x)
