"""Vectorised episodes: a method that declares the batched protocol answers many episodes per tensor op.

A `methods.base.BatchedMethod` has `predict_batch(support_idx (E, n), support_y (E, n), query_idx (E, m),
n_way) -> (E, m, N)`, which takes rows by index, as fit and predict do, and must give the scores that fit +
predict give for each episode alone (tests/test_fastpath.py checks it); methods/nearest_mean.py is how
protonet and simpleshot do it. The harness asks the class, never inspects how its fit is written.

Chunks are sized so that the rows one chunk reads take about CHUNK_BYTES. The run's worker threads
(thread_policy) compute whole chunks side by side from the query-blind view (tasks.episodes.BlindEpisodes),
and whoever holds the episode set scores each chunk as a whole (`score_chunk`, through benchmark/scoring.py
like every other scorer).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from benchmark.scoring import score_episodes
from methods.base import BatchedMethod
from methods.devices import CPU, to_numpy
from tasks.episodes import BlindEpisodes, EpisodeSet

CHUNK_BYTES = 24 * 2**20


def supports_batches(method) -> bool:
    """Whether the method's class declares the batched protocol (methods.base.BatchedMethod)."""
    return isinstance(method, BatchedMethod)


def chunk_episodes(episodes: EpisodeSet | BlindEpisodes, dim: int) -> int:
    """Episodes per chunk for rows of `dim` float32 values."""
    per_episode = (episodes.support.shape[1] + episodes.query.shape[1]) * dim * 4
    return int(max(1, CHUNK_BYTES // per_episode))


def in_query_order(scores, order: np.ndarray):
    """Scores answered for tasks.episodes.in_row_order's rows, put back in the episode's query order (as given
    where their shape does not fit: scoring then names the problem)."""
    scores = np.asarray(scores)
    if scores.shape[: order.ndim] != order.shape or scores.ndim != order.ndim + 1:
        return scores
    out = np.empty_like(scores)
    np.put_along_axis(out, order[..., None], scores, axis=order.ndim - 1)
    return out


@torch.inference_mode()
def batch_scores(method, blind: BlindEpisodes, indices) -> np.ndarray:
    """(len(indices), n_query, n_way) scores for the chosen episodes of the query-blind view, in one batched
    call; a query's scores in the view's order (ascending rows)."""
    idx = np.asarray(indices, dtype=np.int64)
    device = getattr(method, "device", None) or CPU  # where the method's features are (methods/base.py)
    support = torch.from_numpy(blind.support[idx]).to(device)
    query = torch.from_numpy(blind.query[idx]).to(device)
    support_y = torch.arange(blind.n_way, device=device).repeat_interleave(blind.n_shot).expand(len(idx), -1)
    return to_numpy(method.predict_batch(support, support_y, query, blind.n_way).float())


def score_chunk(episodes: EpisodeSet, indices, scores: np.ndarray, class_names, what: str = "the method") -> list[dict]:
    """What `benchmark.scoring.score_episode` returns for each episode, computed for the chunk at once."""
    indices = np.asarray(indices)
    truth = np.broadcast_to(
        np.repeat(np.arange(episodes.n_way), episodes.n_query),  # queries ordered by class
        (len(indices), episodes.n_way * episodes.n_query),
    )
    return score_episodes(scores, truth, episodes.classes[indices], class_names, what)


def chunked_answers(method, blind: BlindEpisodes, pending: list[int], clock, workers: int | None = None):
    """Yields (chunk's episodes, batch_scores of the chunk, seconds per episode) chunk by chunk, in order;
    `seconds` is the time the chunk's scores took divided by its episodes.

    With `workers` > 1 (default: thread_policy's worker count), that many threads compute whole chunks side by
    side, each on one intra-op thread: a chunk's scores do not depend on which thread
    computed it, so the results are the same bits for any count."""
    from methods.features import inference_threads

    workers = max(1, int(workers or inference_threads() or 1))
    size = chunk_episodes(blind, method.batch_row_floats())
    chunks = [pending[start : start + size] for start in range(0, len(pending), size)]

    def timed_scores(chunk):
        started = clock()
        scores = batch_scores(method, blind, chunk)
        return scores, (clock() - started) / len(chunk)

    if workers == 1 or len(chunks) == 1:
        answered = map(timed_scores, chunks)
        pool = None
    else:
        pool = ThreadPoolExecutor(min(workers, len(chunks)), initializer=torch.set_num_threads, initargs=(1,))
        answered = pool.map(timed_scores, chunks)
    try:
        for chunk, (scores, seconds) in zip(chunks, answered):
            yield chunk, scores, seconds
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
