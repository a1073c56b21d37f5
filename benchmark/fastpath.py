"""Vectorised episodes: a frozen-feature method with `predict_batch` answers many episodes per tensor op.

`predict_batch(support_x (E, n, D), support_y (E, n), query_x (E, m, D), n_way) -> (E, m, N)` must give the
scores that fit + predict give for each episode alone (tests/test_fastpath.py checks it).
"""
from __future__ import annotations

import numpy as np
import torch

from tasks.episodes import EpisodeSet

CHUNK_EPISODES = 200


def supports_batches(method) -> bool:
    return callable(getattr(method, "predict_batch", None)) and hasattr(method, "features")


@torch.inference_mode()
def batch_scores(method, episodes: EpisodeSet, indices: list[int]) -> np.ndarray:
    """(len(indices), n_query, n_way) scores for the chosen episodes, in one batched call."""
    idx = np.asarray(indices)
    support_y = torch.as_tensor(np.broadcast_to(np.repeat(np.arange(episodes.n_way), episodes.k_shot),
                                                (len(idx), episodes.n_way * episodes.k_shot)).copy())
    support_x = method.features[torch.as_tensor(episodes.support[idx])]
    query_x = method.features[torch.as_tensor(episodes.query[idx])]
    return method.predict_batch(support_x, support_y, query_x, episodes.n_way).float().numpy()
