"""The base classifier: SDFT's step-1 network with its own linear head, restricted to an episode's classes.

A reference, not a few-shot learner: it shows what pre-training on the base pool alone gives. Step 1 is
SDFT's (methods/sdft.py: the same training, the same cached checkpoint and cache key); per episode the
support is used only for its class ids (`takes_classes`: the classes the user labelled), each of which must
be a base class, and a query scores the head's logits of those classes. On a task whose episode classes are
not among the base classes (aid-classes: class-disjoint) it refuses before training anything.
"""

from __future__ import annotations

import numpy as np
import torch

from common.errors import UserError
from methods.base import Context
from methods.devices import to_numpy
from methods.registry import register_method
from methods.sdft import SDFT, STEP1_DEFAULTS


@register_method("base-classifier")
class BaseClassifier(SDFT):
    description = "Reference: SDFT's step-1 network and linear head on the base classes, restricted to the episode's"
    option_defaults = dict(STEP1_DEFAULTS)  # step 1's options only: nothing is trained per episode
    takes_classes = True
    refusal_hint = ""
    version = 3  # SDFT's: its rows move with step 1 (STEP1_VERSION)

    def __init__(self, **options):
        unknown = set(options) - set(STEP1_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(STEP1_DEFAULTS)}")
        super().__init__(**options)  # step 2's options stay at their defaults; only top_blocks=0 is used

    def config(self) -> dict:
        return {k: self.opts[k] for k in STEP1_DEFAULTS}

    def prepare(self, ctx: Context) -> None:
        outside = np.setdiff1d(ctx.episode_classes(), np.unique(ctx.base_pool()[1]))
        if len(outside):
            raise UserError(
                "base-classifier: this task's episode classes are not all base classes "
                f"({len(outside)} are not); it only answers tasks whose classes were pre-trained on"
            )
        super().prepare(ctx)  # step 1 (cached) and the activations entering its top
        self.weight, self.bias = self.step1_head(ctx)  # where the activations are (--device)

    def fit(self, support_idx, support_y, n_way, rng, classes=None):
        self.rows = torch.from_numpy(self.base_rows(classes).astype(np.int64)).to(self.device)

    def predict(self, query_idx):
        self.top.eval()
        with torch.inference_mode():
            features = self.top(self.acts[self.positions(query_idx)]).flatten(1)
            return to_numpy(features @ self.weight[self.rows].T + self.bias[self.rows])
