"""Vectorised episodes: a frozen-feature method with `predict_batch` answers many episodes per tensor op.

`predict_batch(support_x (E, n, D), support_y (E, n), query_x (E, m, D), n_way) -> (E, m, N)` must give the
scores that fit + predict give for each episode alone (tests/test_fastpath.py checks it). A method whose
`predict_batch` also takes `query_sq` (the queries' squared norms, (E, m)) is handed them gathered from norms
computed once per feature matrix instead of once per query occurrence: the same numbers, since a row's sum
does not depend on the batch it sits in (checked by the same test).

Chunks are sized so that the gathered support and query rows of one chunk take about CHUNK_BYTES, gathered
into buffers reused from chunk to chunk. Measured on hirise-regions, 600 episodes 5-way 5-shot 15-query, one
thread: 200 episodes per chunk in fresh tensors 360 ms, 25 episodes 100 ms; then with reused buffers, the
squared norms computed once per image and protonet's product as protos @ query^T: 96 ms (2 MB chunks), 53 ms
(12 MB), 49 ms (24 MB). What is left is mostly copying the rows (about 300 MB for 600 episodes) and the
products themselves, which the run's worker threads (thread_policy) share out chunk by chunk.

The scores of a chunk are then scored as a whole (`score_chunk`), with the same numbers as
`benchmark.runner.score_episode` (accuracy, macro-F1 as scikit-learn computes it, per-class accuracy), which
costs about a millisecond per episode through scikit-learn and microseconds here.
"""
from __future__ import annotations

import inspect
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from tasks.episodes import EpisodeSet

CHUNK_BYTES = 24 * 2**20

_local = threading.local()
_norms: dict[int, tuple[weakref.ref, torch.Tensor]] = {}  # id(features) -> (features, their squared norms)


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


def _takes_query_sq(method) -> bool:
    try:
        return "query_sq" in inspect.signature(method.predict_batch).parameters
    except (TypeError, ValueError):
        return False


def squared_norms(features: torch.Tensor) -> torch.Tensor:
    """(n,) squared L2 norms of the rows, computed once per feature tensor."""
    held = _norms.get(id(features))
    if held is None or held[0]() is not features:
        key = id(features)
        held = _norms[key] = (weakref.ref(features, lambda _: _norms.pop(key, None)), (features**2).sum(-1))
    return held[1]


class Buffers:
    """Gathered support and query rows, reused from chunk to chunk and from call to call (one set per thread):
    a fresh multi-megabyte tensor is a fresh mapping of memory to fault in page by page, which took as long as
    the gather itself per chunk, and about 25 ms per call (measured) when only the chunks shared them."""

    def __init__(self):
        self.support = self.query = None

    def take(self, name: str, rows: int, dim: int) -> torch.Tensor:
        held = getattr(self, name)
        if held is None or held.shape[0] < rows or held.shape[1] != dim:
            held = torch.empty(rows, dim)
            setattr(self, name, held)
        return held[:rows]


@torch.inference_mode()
def batch_scores(method, episodes: EpisodeSet, indices, buffers: Buffers | None = None) -> np.ndarray:
    """(len(indices), n_query, n_way) scores for the chosen episodes, in one batched call."""
    buffers = buffers or Buffers()
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    features = method.features
    e, dim = len(idx), features.shape[1]
    support = torch.as_tensor(episodes.support).index_select(0, idx)
    query = torch.as_tensor(episodes.query).index_select(0, idx)
    support_y = torch.arange(episodes.n_way).repeat_interleave(episodes.k_shot).expand(e, -1)
    support_x = torch.index_select(features, 0, support.reshape(-1),
                                   out=buffers.take("support", support.numel(), dim)).view(e, -1, dim)
    query_x = torch.index_select(features, 0, query.reshape(-1),
                                 out=buffers.take("query", query.numel(), dim)).view(e, -1, dim)
    extra = {"query_sq": squared_norms(features)[query]} if _takes_query_sq(method) else {}
    scores = method.predict_batch(support_x, support_y, query_x, episodes.n_way, **extra)
    return scores.float().numpy().copy()  # nothing may point into the buffers


def score_chunk(episodes: EpisodeSet, indices, scores: np.ndarray, class_names) -> list[dict]:
    """What `benchmark.runner.score_episode` returns for each episode, computed for the chunk at once."""
    scores = np.asarray(scores)
    n_way, q = episodes.n_way, episodes.n_query
    expected = (len(indices), n_way * q, n_way)
    if scores.shape != expected or not np.isfinite(scores).all():
        raise RuntimeError(f"method returned scores of shape {scores.shape} (finite: {np.isfinite(scores).all()}); "
                           f"expected finite {expected}")
    pred = scores.argmax(axis=2)  # (E, m)
    truth = np.repeat(np.arange(n_way), q)  # the query of every episode is ordered by class
    hits = pred == truth
    tp = hits.reshape(len(indices), n_way, q).sum(axis=2)  # (E, N): correct queries of each class
    predicted = (pred[..., None] == np.arange(n_way)).sum(axis=1)  # (E, N): queries predicted as each class
    # scikit-learn: F1 = 2 tp / (true + predicted) (never 0/0 here: every class has q > 0 queries), then the
    # plain mean over labels
    macro = (2.0 * tp / (q + predicted)).mean(axis=1)
    accuracy = hits.sum(axis=1) / (n_way * q)
    names = np.array(class_names, dtype=object)[episodes.classes[np.asarray(indices)]]
    shares = np.array([f"{k / q:.6g}" for k in range(q + 1)], dtype=object)[tp]  # tp / q as score_episode writes it
    return [{
        "classes": c,
        "accuracy": a,
        "macro_f1": f,
        "class_accuracy": s,
        "n_query": n_way * q,
    } for c, a, f, s in zip(_join_columns(names), accuracy.tolist(), macro.tolist(), _join_columns(shares))]


def _join_columns(cells: np.ndarray) -> list[str]:
    """"|".join(row) for every row of an object array of strings, column by column in C."""
    joined = cells[:, 0]
    for c in range(1, cells.shape[1]):
        joined = joined + "|" + cells[:, c]
    return joined.tolist()


def chunked_results(method, episodes: EpisodeSet, pending: list[int], class_names, clock, workers: int | None = None):
    """Yields (episode, score dict, seconds) chunk by chunk, in order; `seconds` is the time the chunk's scores
    took divided by its episodes (scoring them is not counted, as on the one-by-one path).

    With `workers` > 1 (default: thread_policy's worker count), that many threads compute whole chunks side by
    side, each on one intra-op thread and its own buffers: a chunk's scores do not depend on which thread
    computed it, so the results are the same bits for any count."""
    from methods.features import inference_threads

    workers = max(1, int(workers or inference_threads() or 1))
    size = chunk_episodes(episodes, method.features.shape[1])
    chunks = [pending[start : start + size] for start in range(0, len(pending), size)]

    def timed_scores(chunk):
        if not hasattr(_local, "buffers"):
            _local.buffers = Buffers()
        started = clock()
        scores = batch_scores(method, episodes, chunk, _local.buffers)
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
