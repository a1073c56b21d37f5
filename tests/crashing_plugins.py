"""Mapping plugins that crash: a nearest-class-mean method that raises in prepare, fit or predict, or ends the process with
sys.exit in predict, or returns NaN scores; and one whose prepare raises a UserError, as the harness does for bad input a method reads
through its context. tests/test_crater_rows.py and tests/test_mapping.py run them in-process,
tests/test_map_isolate.py in the sandbox (which imports this module by name, so it has no test imports)."""

from __future__ import annotations

import sys

import torch

from common.errors import UserError
from methods.base import FeatureMethod
from methods.registry import register_method


class NearestMean(FeatureMethod):
    """Answers like protonet until it crashes where a subclass says."""

    def fit_features(self, x, y, n_way, rng):
        self.means = torch.stack([x[y == c].mean(0) for c in range(n_way)])

    def predict_features(self, x):
        return -torch.cdist(x, self.means)


@register_method("crash-prepare")
class CrashesInPrepare(NearestMean):
    def prepare(self, ctx):
        raise RuntimeError("boom in prepare")


@register_method("crash-fit")
class CrashesInFit(NearestMean):
    def fit(self, *args, **named):
        raise RuntimeError("boom in fit")


@register_method("crash-predict")
class CrashesInPredict(NearestMean):
    def predict(self, query_idx):
        raise RuntimeError("boom in predict")


@register_method("exit-predict")
class ExitsInPredict(NearestMean):
    def predict(self, query_idx):
        sys.exit(3)


@register_method("nan-scores")
class NaNScores(NearestMean):
    def predict(self, query_idx):
        return super().predict(query_idx) * float("nan")


@register_method("bad-input-prepare")
class BadInputInPrepare(NearestMean):
    def prepare(self, ctx):
        raise UserError("image /data/x.png cannot be decoded; replace or remove it")


# (--method, the stage its failure names, what its message holds) of each crashing plugin
CRASHES = [
    ("crash-prepare", "prepare", "RuntimeError: boom in prepare"),
    ("crash-fit", "fit", "RuntimeError: boom in fit"),
    ("crash-predict", "predict", "RuntimeError: boom in predict"),
    ("exit-predict", "predict", "SystemExit: 3 (it tried to end the process"),
    ("nan-scores", "predict", "non-finite scores (e.g. nan); expected finite values"),
]
