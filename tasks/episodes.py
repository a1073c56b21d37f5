"""N-way K-shot Q-query episodes whose support and query never share a source scene (group).

Episode i of a stream is drawn from its own generator, seeded by (seed, N, K, Q, i): the first 600
episodes of a 1000-episode run are the 600 of a 600-episode run, and a resumed run redraws exactly the
episodes it had. An episode set is a value with a content hash, saved as a manifest, so every method of a
run sees the same episodes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserError, notice_once
from common.files import atomic_write

SAMPLER_VERSION = 1
PARTITION_RESTARTS = 40
CLASS_DRAWS = 200


@dataclass(frozen=True)
class Episode:
    index: int
    classes: np.ndarray  # (N,) dataset label ids, in episode order
    support_idx: np.ndarray  # (N*K,) table indices
    support_y: np.ndarray  # (N*K,) episode labels 0..N-1
    query_idx: np.ndarray  # (N*Q,)
    query_y: np.ndarray  # (N*Q,)

    @property
    def n_way(self) -> int:
        return len(self.classes)


class PoolIndex:
    """Per-class, per-group image lists of one pool of a table, for fast sampling."""

    def __init__(self, labels: np.ndarray, groups: np.ndarray, pool: np.ndarray):
        self.pool = np.asarray(pool, dtype=np.int64)
        pool_labels = np.asarray(labels)[self.pool]
        group_ids, group_of = np.unique(np.asarray(groups, dtype=object)[self.pool].astype(str), return_inverse=True)
        self.classes = np.unique(pool_labels)
        self.n_groups = len(group_ids)
        class_pos = {c: i for i, c in enumerate(self.classes)}
        self.counts = np.zeros((self.n_groups, len(self.classes)), dtype=np.int64)
        np.add.at(self.counts, (group_of, [class_pos[c] for c in pool_labels]), 1)
        # images[c][g] -> table indices of class c in group g
        self.images: dict[int, dict[int, np.ndarray]] = {}
        order = np.lexsort((group_of, pool_labels))
        for c in self.classes:
            self.images[int(c)] = {}
        for idx in order:
            c, g = int(pool_labels[idx]), int(group_of[idx])
            self.images[c].setdefault(g, [])
            self.images[c][g].append(self.pool[idx])
        for c in self.images:
            self.images[c] = {g: np.asarray(v, dtype=np.int64) for g, v in self.images[c].items()}
        self.class_pos = class_pos

    def class_can_fill(self, c: int, k: int, q: int) -> bool:
        """Whether some split of class c's groups puts >= k images on one side and >= q on the other (False for
        a class the pool does not hold)."""
        if c not in self.class_pos:
            return False
        sizes = self.counts[:, self.class_pos[c]]
        sizes = sizes[sizes > 0]
        total = int(sizes.sum())
        if total < k + q:
            return False
        reachable = 1  # bit s set <=> some subset of groups holds exactly s images
        for s in sizes:
            reachable |= reachable << int(s)
        window = ((1 << (total - q + 1)) - 1) >> k << k  # bits k..total-q
        return bool(reachable & window)

    def eligible(self, k: int, q: int) -> np.ndarray:
        return np.array([c for c in self.classes if self.class_can_fill(int(c), k, q)], dtype=np.int64)


def _partition(index: PoolIndex, chosen: np.ndarray, k: int, q: int, rng: np.random.Generator):
    """Assign each relevant group to support (True) or query (False) so every chosen class has k and q images.

    Randomised greedy with restarts: groups in random order go to a side with probability proportional to
    what they still contribute there. Returns {group: bool} or None.
    """
    cols = np.array([index.class_pos[int(c)] for c in chosen])
    counts = index.counts[:, cols]
    relevant = np.flatnonzero(counts.sum(axis=1) > 0)
    for _ in range(PARTITION_RESTARTS):
        need_s = np.full(len(chosen), k)
        need_q = np.full(len(chosen), q)
        side = {}
        for g in rng.permutation(relevant):
            gain_s = np.minimum(counts[g], need_s).sum()
            gain_q = np.minimum(counts[g], need_q).sum()
            p_support = 0.5 if gain_s + gain_q == 0 else gain_s / (gain_s + gain_q)
            to_support = bool(rng.random() < p_support)
            side[int(g)] = to_support
            if to_support:
                need_s = np.maximum(need_s - counts[g], 0)
            else:
                need_q = np.maximum(need_q - counts[g], 0)
        if not need_s.any() and not need_q.any():
            return side
    return None


def sample_episode(
    index: PoolIndex, n_way: int, k: int, q: int, rng: np.random.Generator, eligible: np.ndarray, episode_index: int = 0
) -> Episode:
    for _ in range(CLASS_DRAWS):
        chosen = rng.choice(eligible, size=n_way, replace=False)
        side = _partition(index, chosen, k, q, rng)
        if side is not None:
            break
    else:
        raise UserError(
            f"could not draw a scene-disjoint {n_way}-way {k}-shot {q}-query episode after {CLASS_DRAWS} tries; "
            "lower --shots, --queries or --ways"
        )
    support, query = [], []
    for c in chosen:
        groups = index.images[int(c)]
        s_pool = np.concatenate([groups[g] for g in sorted(groups) if side[g]])
        q_pool = np.concatenate([groups[g] for g in sorted(groups) if not side[g]])
        support.append(rng.choice(s_pool, size=k, replace=False))
        query.append(rng.choice(q_pool, size=q, replace=False))
    return Episode(
        index=episode_index,
        classes=chosen.astype(np.int64),
        support_idx=np.concatenate(support),
        support_y=np.repeat(np.arange(n_way), k),
        query_idx=np.concatenate(query),
        query_y=np.repeat(np.arange(n_way), q),
    )


@dataclass(frozen=True, eq=False)
class EpisodeSet:
    task: str
    stream: str  # identifies the episode stream: task fingerprint, pool, N, K, Q, seed, sampler version
    n_way: int
    n_shot: int
    n_query: int
    seed: int
    classes: np.ndarray  # (E, N)
    support: np.ndarray  # (E, N*K)
    query: np.ndarray  # (E, N*Q)

    def __len__(self) -> int:
        return len(self.classes)

    def episode(self, i: int) -> Episode:
        return Episode(**_drawn(self, i), query_y=np.repeat(np.arange(self.n_way), self.n_query))

    def __iter__(self):
        return (self.episode(i) for i in range(len(self)))

    def blind(self, handles=None) -> BlindEpisodes:
        """The query-blind view of these episodes: what answering them needs; with `handles`
        (tasks.handles.RowHandles), rows are given as the handles methods address them by."""
        return BlindEpisodes.of(self, handles)

    @property
    def digest(self) -> str:
        h = hashlib.sha256(self.stream.encode())
        for a in (self.classes, self.support, self.query):
            h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def save(self, path: Path) -> None:
        """Write the manifest atomically (a temporary file beside it, fsync, rename): a killed run or a full disk
        leaves the old manifest or none, never a truncated one."""
        # the manifest format keeps its key `k_shot` (files written before the rename stay readable)
        meta = dict(
            task=self.task,
            stream=self.stream,
            n_way=self.n_way,
            k_shot=self.n_shot,
            n_query=self.n_query,
            seed=self.seed,
            digest=self.digest,
        )
        atomic_write(
            Path(path),
            lambda f: np.savez(f, classes=self.classes, support=self.support, query=self.query, meta=json.dumps(meta)),
        )

    @classmethod
    def load(cls, path: Path) -> EpisodeSet:
        """The manifest at `path`; a one-line UserError naming it if it is truncated, damaged or not one."""
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                meta["n_shot"] = meta.pop("k_shot")
                digest = meta.pop("digest")
                eps = cls(classes=z["classes"], support=z["support"], query=z["query"], **meta)
        except OSError as exc:
            raise UserError(f"episode manifest {path} cannot be read ({exc.strerror or exc})") from None
        except Exception as exc:  # zipfile.BadZipFile, EOFError, ValueError, KeyError, TypeError: not a manifest
            raise UserError(f"episode manifest {path} is corrupt or truncated ({type(exc).__name__}: {exc})") from None
        if eps.digest != digest:
            raise UserError(f"episode manifest {path} is corrupt (content hash mismatch)")
        return eps


def in_row_order(query_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the query's rows in ascending row order along the last axis, the order that sorts them).

    The sampler lays a query out class by class: a method that saw that order could answer from positions
    alone. Rows in table order say nothing of their classes that the rows themselves do not."""
    order = np.argsort(query_idx, axis=-1, kind="stable")
    return np.take_along_axis(query_idx, order, -1), order


def _owned(array: np.ndarray) -> np.ndarray:
    out = np.array(array, copy=True)  # shares memory with nothing of the episode set's
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class BlindEpisode:
    """One episode as a method may see it: its classes, its support (rows and labels) and its query's rows in
    ascending row order. It has no query labels, and the order of its query rows does not give them."""

    index: int
    classes: np.ndarray  # (N,) dataset label ids, in episode-label order
    support_idx: np.ndarray  # (N*K,)
    support_y: np.ndarray  # (N*K,) episode labels 0..N-1
    query_idx: np.ndarray  # (N*Q,) ascending

    @property
    def n_way(self) -> int:
        return len(self.classes)


@dataclass(frozen=True, eq=False)
class BlindEpisodes:
    """What answering an EpisodeSet needs and nothing from which its query labels can be read: the episodes'
    classes and supports, and each query's rows in ascending row order (in an EpisodeSet a query's position is
    its label). Whatever runs a method's fit and predict (this process, or a Ray worker that receives only
    this) answers from it; whoever holds the EpisodeSet scores. Arrays are read-only copies."""

    n_way: int
    n_shot: int
    classes: np.ndarray  # (E, N)
    support: np.ndarray  # (E, N*K), class by class as support_y says
    query: np.ndarray  # (E, N*Q), each row ascending

    @classmethod
    def of(cls, episodes: EpisodeSet, handles=None) -> BlindEpisodes:
        """`handles` (tasks.handles.RowHandles): the view addresses rows by their handles, as methods do."""
        support, query = episodes.support, episodes.query
        if handles is not None:
            support, query = handles.of_rows(support), handles.of_rows(query)
        return cls(
            n_way=int(episodes.n_way),
            n_shot=int(episodes.n_shot),
            classes=_owned(episodes.classes),
            support=_owned(support),
            query=_owned(in_row_order(query)[0]),
        )

    def __len__(self) -> int:
        return len(self.classes)

    def episode(self, i: int) -> BlindEpisode:
        return BlindEpisode(**_drawn(self, i))


def _drawn(episodes: EpisodeSet | BlindEpisodes, i: int) -> dict:
    """What an episode of either view holds besides the query's labels: its classes, support and query rows."""
    return dict(
        index=i,
        classes=episodes.classes[i],
        support_idx=episodes.support[i],
        support_y=np.repeat(np.arange(episodes.n_way), episodes.n_shot),
        query_idx=episodes.query[i],
    )


def episode_rng(seed: int, n_way: int, k: int, q: int, i: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, n_way, k, q, i]))


def feasibility_error(task: str, index: PoolIndex, n_way: int, k: int, q: int, class_names) -> str | None:
    """None if N-way K-shot Q-query episodes can be drawn, else a one-line explanation with alternatives."""
    eligible = index.eligible(k, q)
    if len(eligible) >= n_way:
        return None
    names = ", ".join(class_names[c] for c in eligible) or "none"
    # No class has more images than the largest one: search K and Q only up to that (a huge --shots must not
    # make this message take forever).
    largest = int(index.counts.sum(axis=0).max(initial=0))
    max_k = max((kk for kk in range(1, min(k, largest)) if len(index.eligible(kk, q)) >= n_way), default=0)
    max_q = max((qq for qq in range(1, min(q, largest)) if len(index.eligible(k, qq)) >= n_way), default=0)
    options = [f"--ways {len(eligible)}"] if len(eligible) >= 2 else []
    if max_k:
        options.append(f"--shots {max_k} or fewer")
    if max_q:
        options.append(f"--queries {max_q} or fewer")
    return (
        f"task {task} cannot make {n_way}-way {k}-shot {q}-query episodes: only {len(eligible)} classes "
        f"({names}) have {k}+{q} images in scene-disjoint support and query parts; "
        f"try {' or '.join(options) if options else 'another task'}"
    )


def undrawable(index: PoolIndex, k: int, q: int, class_names) -> tuple[list[str], list[str]]:
    """The classes of the pool that no Q-query episode can draw at any K, and those that K-shot Q-query episodes
    cannot draw, with why ("name (why)")."""
    never, here = [], []
    for c in index.classes:
        if index.class_can_fill(int(c), k, q):
            continue
        sizes = index.counts[:, index.class_pos[c]]
        n, scenes = int(sizes.sum()), int((sizes > 0).sum())
        at_all = index.class_can_fill(int(c), 1, q)
        shots = str(k) if at_all else "1"
        why = (
            f"{n} image(s), fewer than {shots} + {q}"
            if n < int(shots) + q
            else f"{n} images in {scenes} scene(s), which split into no {shots} + {q} scene-disjoint parts"
        )
        (here if at_all else never).append(f"{class_names[int(c)]} ({why}{'' if at_all else ' at any K'})")
    return never, here


def sample_episodes(
    task: str, stream: str, index: PoolIndex, n_way: int, k: int, q: int, n_episodes: int, seed: int, class_names
) -> EpisodeSet:
    for name, value in (("ways", n_way), ("shots", k), ("queries", q), ("episodes", n_episodes)):
        if int(value) < 1:
            raise UserError(f"--{name} must be a positive integer, got {value}")
    if n_way < 2:
        raise UserError(f"--ways must be at least 2, got {n_way}")
    problem = feasibility_error(task, index, n_way, k, q, class_names)
    if problem:
        raise UserError(problem)
    eligible = index.eligible(k, q)
    never, here = undrawable(index, k, q, class_names)
    if never:  # the same line for every K: printed once a run
        notice_once(f"task {task}: no {q}-query episode can draw {'; '.join(never)}")
    if here:
        notice_once(f"task {task}: no {k}-shot {q}-query episode can draw {'; '.join(here)}")
    episodes = [
        sample_episode(index, n_way, k, q, episode_rng(seed, n_way, k, q, i), eligible, i) for i in range(n_episodes)
    ]
    return EpisodeSet(
        task=task,
        stream=stream,
        n_way=n_way,
        n_shot=k,
        n_query=q,
        seed=seed,
        classes=np.stack([e.classes for e in episodes]),
        support=np.stack([e.support_idx for e in episodes]),
        query=np.stack([e.query_idx for e in episodes]),
    )
