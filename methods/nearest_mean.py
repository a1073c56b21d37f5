"""Nearest class mean over rows of a feature matrix, one episode or many at once (protonet, simpleshot).

Scores are negative squared Euclidean distances to the class means of the support rows. The batched path
(`predict_batch`, used by benchmark/fastpath.py) takes row indices, as fit and predict do, and reads the
rows itself:
- class means come from `embedding_bag`, which averages rows straight out of the feature matrix without
  copying them; one episode's `fit_features` calls the same kernel on its gathered rows, so both paths give
  the same means bit for bit;
- query rows are gathered into a buffer reused from call to call, one per thread (a fresh multi-megabyte
  tensor is fresh memory to fault in page by page: as slow as the gather itself);
- the queries' squared norms come from norms computed once per feature matrix (a row's sum does not depend
  on the batch it sits in).
Averaging straight out of the matrix is about three times faster than gathering the support rows and
averaging them with a one-hot product (docs/method-notes.md).

`power` > 0 applies PT-MAP's power transform to every row first (methods/transductive.power_transform: a
per-row transform, so the method stays inductive); 0, the default, leaves the features as they are and out of
the method's config, so rows made before the option existed keep their key.
"""

from __future__ import annotations

import threading
import weakref

import torch
from torch.nn import functional as F

from methods.base import BatchedMethod, Context

_local = threading.local()
_norms: dict[int, tuple[weakref.ref, torch.Tensor]] = {}  # id(features) -> (features, their squared norms)


def class_means(rows: torch.Tensor, row_idx: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """(..., n_way, D) means of rows[row_idx] per label; row_idx and labels (..., n), labels in 0..n_way-1.

    A label without rows gets a zero mean."""
    lead = row_idx.shape[:-1]
    row_idx, labels = row_idx.reshape(-1, row_idx.shape[-1]), labels.reshape(-1, labels.shape[-1])
    order = torch.argsort(labels, dim=1, stable=True)  # each episode's rows, class by class
    counts = F.one_hot(labels, n_way).sum(1).reshape(-1)  # (E * N,)
    offsets = counts.cumsum(0) - counts
    means = F.embedding_bag(row_idx.gather(1, order).reshape(-1), rows, offsets, mode="mean")
    return means.reshape(*lead, n_way, rows.shape[1])


def neg_sq_distances(query: torch.Tensor, protos: torch.Tensor, query_sq: torch.Tensor | None = None) -> torch.Tensor:
    """(..., m, N) negative squared Euclidean distances, expanded for speed and batching. `query_sq` (..., m):
    the queries' squared norms where the caller has them. The product is protos @ query^T: with few
    prototypes and many queries it is the faster layout (docs/method-notes.md). 2 * (p @ q) equals (2 * p) @ q bit
    for bit (a power of two) without scaling every query row first."""
    if query_sq is None:
        query_sq = (query**2).sum(-1)
    return (
        2 * (protos @ query.transpose(-1, -2)).transpose(-1, -2)
        - query_sq.unsqueeze(-1)
        - (protos**2).sum(-1).unsqueeze(-2)
    )


def squared_norms(features: torch.Tensor) -> torch.Tensor:
    """(n,) squared L2 norms of the rows, computed once per feature tensor."""
    held = _norms.get(id(features))
    if held is None or held[0]() is not features:
        key = id(features)
        held = _norms[key] = (weakref.ref(features, lambda _: _norms.pop(key, None)), (features**2).sum(-1))
    return held[1]


def gather_rows(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """features[idx] (idx of any shape) in this thread's reused buffer: valid until its next call."""
    held = getattr(_local, "buffer", None)
    if (
        held is None
        or held.shape[0] < idx.numel()
        or held.shape[1] != features.shape[1]
        or held.device != features.device
    ):
        held = _local.buffer = torch.empty(idx.numel(), features.shape[1], dtype=features.dtype, device=features.device)
    out = torch.index_select(features, 0, idx.reshape(-1), out=held[: idx.numel()])
    return out.view(*idx.shape, features.shape[1])


def check_power(power: float) -> float:
    if float(power) < 0:
        raise ValueError(f"power must be 0 (no power transform) or positive, got {power}")
    return float(power)


class NearestClassMean(BatchedMethod):
    """Scores = negative squared distances from the query rows to the support rows' class means."""

    power = 0.0  # subclasses set it from their `power` option

    def prepare(self, ctx: Context) -> None:
        super().prepare(ctx)
        if self.power > 0:
            from methods.transductive import power_transform

            self.features = power_transform(self.features, self.power)

    def config(self) -> dict:
        config = super().config()
        if config.get("power") == 0.0:  # the value at which it computes what it did before the option existed
            del config["power"]
        return config

    def fit_features(self, x, y, n_way, rng):
        self.protos = class_means(x, torch.arange(len(y), device=x.device), y, n_way)

    def predict_features(self, x):
        return neg_sq_distances(x, self.protos)

    @torch.inference_mode()
    def predict_batch(
        self, support_idx: torch.Tensor, support_y: torch.Tensor, query_idx: torch.Tensor, n_way: int
    ) -> torch.Tensor:
        """Many episodes at once: support_idx, support_y (E, n) and query_idx (E, m), rows of self.features,
        -> (E, m, N) scores, those fit_features + predict_features give for each episode."""
        protos = class_means(self.features, support_idx, support_y, n_way)
        return neg_sq_distances(gather_rows(self.features, query_idx), protos, squared_norms(self.features)[query_idx])
