"""Linear probe: multinomial logistic regression (scikit-learn) on standardised frozen features."""

from __future__ import annotations

import numpy as np
import torch

from methods.base import FeatureMethod
from methods.devices import to_numpy
from methods.registry import register_method


@register_method("linear-probe")
class LinearProbe(FeatureMethod):
    description = "Logistic regression (L2, C=1) on standardised frozen ImageNet features"

    def __init__(self, C: float = 1.0, max_iter: int = 1000):
        if float(C) <= 0 or int(max_iter) < 1:
            raise ValueError(f"C must be > 0 and max_iter >= 1, got C={C}, max_iter={max_iter}")
        self.C, self.max_iter = float(C), int(max_iter)

    def fit_features(self, x, y, n_way, rng):
        # imported here: every `bench run` imports this module (the registry), few run this method
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter))
        self.model.fit(to_numpy(x), to_numpy(y))  # scikit-learn runs on the CPU whatever --device says

    def predict_features(self, x):
        scores = self.model.decision_function(to_numpy(x)).astype(np.float32)
        if scores.ndim == 1:  # binary: scikit-learn returns the positive class's score only
            scores = np.stack([-scores, scores], axis=1)
        return torch.from_numpy(scores)
