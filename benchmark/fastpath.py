"""Vectorised episodes: a method that declares the batched protocol answers many episodes per tensor op.

A `methods.base.BatchedMethod` has `predict_batch(support_idx (E, n), support_y (E, n), query_idx (E, m),
n_way) -> (E, m, N)`, which takes rows by index, as fit and predict do, and must give the scores that fit +
predict give for each episode alone (tests/test_fastpath.py checks it); methods/nearest_mean.py is how
protonet and simpleshot do it. The harness asks the class, never inspects how its fit is written.

Chunks are sized so that the rows one chunk reads take about CHUNK_BYTES. The run's worker threads
(thread_policy) compute whole chunks side by side, and the main thread scores each chunk as a whole
(`score_chunk`, through benchmark/scoring.py like every other scorer).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from benchmark.scoring import score_episodes
from methods.base import BatchedMethod
from methods.devices import CPU, to_numpy
from tasks.episodes import EpisodeSet

CHUNK_BYTES = 24 * 2**20


def supports_batches(method) -> bool:
    """Whether the method's class declares the batched protocol (methods.base.BatchedMethod)."""
    return isinstance(method, BatchedMethod)


def chunk_episodes(episodes: EpisodeSet, dim: int) -> int:
    """Episodes per chunk for rows of `dim` float32 values."""
    per_episode = (episodes.support.shape[1] + episodes.query.shape[1]) * dim * 4
    return int(max(1, CHUNK_BYTES // per_episode))


def in_row_order(query_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the query's rows in ascending row order along the last axis, the order that sorts them).

    The sampler lays a query out class by class: a method that saw that order could answer from positions
    alone. Rows in table order say nothing of their classes that the rows themselves do not."""
    order = np.argsort(query_idx, axis=-1, kind="stable")
    return np.take_along_axis(query_idx, order, -1), order


def in_query_order(scores, order: np.ndarray):
    """Scores answered for in_row_order's rows, put back in the episode's query order (as given where their
    shape does not fit: scoring then names the problem)."""
    scores = np.asarray(scores)
    if scores.shape[: order.ndim] != order.shape or scores.ndim != order.ndim + 1:
        return scores
    out = np.empty_like(scores)
    np.put_along_axis(out, order[..., None], scores, axis=order.ndim - 1)
    return out


@torch.inference_mode()
def batch_scores(method, episodes: EpisodeSet, indices) -> np.ndarray:
    """(len(indices), n_query, n_way) scores for the chosen episodes, in one batched call."""
    idx = np.asarray(indices, dtype=np.int64)
    device = getattr(method, "device", None) or CPU  # where the method's features are (methods/base.py)
    support = torch.from_numpy(episodes.support[idx]).to(device)
    query, order = in_row_order(episodes.query[idx])
    support_y = torch.arange(episodes.n_way, device=device).repeat_interleave(episodes.n_shot).expand(len(idx), -1)
    scores = to_numpy(method.predict_batch(support, support_y, torch.from_numpy(query).to(device),
                                           episodes.n_way).float())
    return in_query_order(scores, order)


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
    size = chunk_episodes(episodes, method.batch_row_floats())
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
