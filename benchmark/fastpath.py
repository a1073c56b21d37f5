"""Vectorised episodes: a frozen-feature method with `predict_batch` answers many episodes per tensor op.

`predict_batch(support_idx (E, n), support_y (E, n), query_idx (E, m), n_way) -> (E, m, N)` takes rows of
`method.features` by index, as fit and predict do, and must give the scores that fit + predict give for each
episode alone (tests/test_fastpath.py checks it); methods/nearest_mean.py is how protonet and simpleshot do it.

Chunks are sized so that the rows one chunk reads take about CHUNK_BYTES. The run's worker threads
(thread_policy) compute whole chunks side by side, and the main thread scores each chunk as a whole
(`score_chunk`, through benchmark/scoring.py like every other scorer).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from benchmark.scoring import score_episodes
from tasks.episodes import EpisodeSet

CHUNK_BYTES = 24 * 2**20


def supports_batches(method) -> bool:
    """A frozen-feature method with predict_batch whose fit/predict are FeatureMethod's own (so that its
    per-episode answer is fit_features + predict_features on rows of method.features, as predict_batch's)."""
    from methods.base import FeatureMethod

    return (callable(getattr(method, "predict_batch", None)) and isinstance(method, FeatureMethod)
            and isinstance(getattr(method, "features", None), torch.Tensor)
            and type(method).fit is FeatureMethod.fit and type(method).predict is FeatureMethod.predict)


def chunk_episodes(episodes: EpisodeSet, dim: int) -> int:
    """Episodes per chunk for rows of `dim` float32 features."""
    per_episode = (episodes.support.shape[1] + episodes.query.shape[1]) * dim * 4
    return int(max(1, CHUNK_BYTES // per_episode))


@torch.inference_mode()
def batch_scores(method, episodes: EpisodeSet, indices) -> np.ndarray:
    """(len(indices), n_query, n_way) scores for the chosen episodes, in one batched call."""
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    support = torch.as_tensor(episodes.support).index_select(0, idx)
    query = torch.as_tensor(episodes.query).index_select(0, idx)
    support_y = torch.arange(episodes.n_way).repeat_interleave(episodes.k_shot).expand(len(idx), -1)
    return method.predict_batch(support, support_y, query, episodes.n_way).float().numpy()


def score_chunk(episodes: EpisodeSet, indices, scores: np.ndarray, class_names, what: str = "the method") -> list[dict]:
    """What `benchmark.scoring.score_episode` returns for each episode, computed for the chunk at once."""
    indices = np.asarray(indices)
    truth = np.broadcast_to(np.repeat(np.arange(episodes.n_way), episodes.n_query),  # queries ordered by class
                            (len(indices), episodes.n_way * episodes.n_query))
    return score_episodes(scores, truth, episodes.classes[indices], class_names, what)


def chunked_results(method, episodes: EpisodeSet, pending: list[int], class_names, clock, workers: int | None = None):
    """Yields (episode, score dict, seconds) chunk by chunk, in order; `seconds` is the time the chunk's scores
    took divided by its episodes (scoring them is not counted, as on the one-by-one path).

    With `workers` > 1 (default: thread_policy's worker count), that many threads compute whole chunks side by
    side, each on one intra-op thread: a chunk's scores do not depend on which thread
    computed it, so the results are the same bits for any count."""
    from methods.features import inference_threads

    workers = max(1, int(workers or inference_threads() or 1))
    size = chunk_episodes(episodes, method.features.shape[1])
    chunks = [pending[start : start + size] for start in range(0, len(pending), size)]

    def timed_scores(chunk):
        started = clock()
        scores = batch_scores(method, episodes, chunk)
        return scores, (clock() - started) / len(chunk)

    if workers == 1 or len(chunks) == 1:
        answered = map(timed_scores, chunks)
        pool = None
    else:
        pool = ThreadPoolExecutor(min(workers, len(chunks)), initializer=torch.set_num_threads, initargs=(1,))
        answered = pool.map(timed_scores, chunks)
    try:
        for chunk, (scores, seconds) in zip(chunks, answered):
            yield from ((i, r, seconds) for i, r in zip(chunk, score_chunk(episodes, chunk, scores, class_names)))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
