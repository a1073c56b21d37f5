"""The harness: every method on the same episodes; one result row per (method, shots, episode)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from benchmark import __version__
from benchmark.fastpath import chunked_results, supports_batches
from benchmark.results import SCHEMA_VERSION, append_rows, check_results_path, done_episodes, read_results
from methods.base import Context
from methods.cache import Cache
from methods.progress import SILENT, Progress
from methods.registry import create_method
from tasks.episodes import Episode, EpisodeSet
from tasks.errors import UserError
from tasks.registry import Task, load_task

FLUSH_EVERY_EPISODES = 20  # one-by-one methods; batched ones (fastpath) answer ~50 episodes in milliseconds,
FLUSH_EVERY_SECONDS = 2.0  # so they flush by time only: a kill loses at most 2 s of work either way


@dataclass
class MethodSpec:
    """`name` or `name:key=value,key=value` from the command line."""

    name: str
    options: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "MethodSpec":
        name, _, rest = text.partition(":")
        options = {}
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UserError(f"bad method option {item!r} in --method {text}; use NAME:key=value,key=value")
            options[key.strip()] = _parse_value(value.strip())
        return cls(name.strip(), options)

    @property
    def label(self) -> str:
        if not self.options:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))


def _parse_value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


@dataclass
class BenchConfig:
    """What `bench run` and `bench fixedk` both take; `results_suffix` tells their default files apart."""

    methods: list[MethodSpec]
    task: str = "hirise-regions"
    shots: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    data_dir: Path = Path("data")
    cache_dir: Path | None = None
    out: Path | None = None
    backbone: str = "efficientnet_lite0"
    image_size: int = 128
    source: str | None = None  # --source: the base pool every pre-training method uses
    results_suffix = ""

    def results_path(self) -> Path:
        return Path(self.out) if self.out else Path("results") / f"{file_stem(self.task)}{self.results_suffix}.csv"


@dataclass
class RunConfig(BenchConfig):
    ways: int = 5
    queries: int = 15
    episodes: int = 600
    seed: int = 0


def file_stem(task: str) -> str:
    """A task name as a file name: `folder:/data/mine` -> `folder__data_mine`."""
    return task.replace(":", "_").replace("/", "_")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> str:
    found = {"marsfsl": __version__}
    for dist in ("torch", "timm", "numpy", "scikit-learn"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return " ".join(f"{k}={v}" for k, v in found.items())


def stream_id(episodes: EpisodeSet) -> str:
    """Names the episode stream (not its length), so a longer run extends a shorter one."""
    return hashlib.sha256(episodes.stream.encode()).hexdigest()[:16]


def save_manifest(episodes: EpisodeSet, path: Path) -> None:
    """Write the stream's manifest unless one as long or longer is there: a 10-episode run must not shrink the
    manifest of the 600 episodes already in the results file (a stream's episode i never changes)."""
    try:
        if path.exists() and len(EpisodeSet.load(path)) >= len(episodes):
            return
    except (UserError, OSError, ValueError, KeyError):
        pass  # unreadable or corrupt: write it anew
    episodes.save(path)


def score_episode(episode: Episode, scores: np.ndarray, class_names) -> dict:
    scores = np.asarray(scores)
    expected = (len(episode.query_idx), episode.n_way)
    if scores.shape != expected or not np.isfinite(scores).all():
        raise RuntimeError(f"method returned scores of shape {scores.shape} (finite: {np.isfinite(scores).all()}); "
                           f"expected finite {expected}")
    pred = scores.argmax(axis=1)
    truth = episode.query_y
    per_class = [float((pred[truth == c] == c).mean()) for c in range(episode.n_way)]
    return {
        "classes": "|".join(class_names[c] for c in episode.classes),
        "accuracy": float((pred == truth).mean()),
        "macro_f1": float(f1_score(truth, pred, average="macro", labels=np.arange(episode.n_way), zero_division=0)),
        "class_accuracy": "|".join(f"{a:.6g}" for a in per_class),
        "n_query": len(truth),
    }


def method_config(method) -> str:
    return json.dumps(method.config(), sort_keys=True)


@contextmanager
def saved_on_exit(out: Path, rows: list[dict]):
    """Append the finished episodes' rows when the block ends, also by Ctrl-C or an error in a later episode."""
    try:
        yield
    finally:
        append_rows(out, rows)


def run_benchmark(config: RunConfig, progress: Progress = SILENT) -> pd.DataFrame:
    """Run (or resume) every method on the shared episodes; returns this run's rows."""
    task = load_task(config.task, config.data_dir, source=config.source)
    methods = [(spec, create_method(spec.name, **spec.options)) for spec in config.methods]
    episode_sets = {k: task.episodes(config.ways, k, config.queries, config.episodes, config.seed)
                    for k in config.shots}  # infeasible (N, K, Q) fails here, before any work
    out = config.results_path()
    check_results_path(out)  # an incompatible, unreadable or unwritable file fails before any work
    manifest_dir = out.parent / "manifests"
    for k, episodes in episode_sets.items():
        save_manifest(episodes, manifest_dir / f"{file_stem(task.name)}-{config.ways}w{k}s{config.queries}q-"
                                               f"seed{config.seed}-{stream_id(episodes)}.npz")
    cache = Cache(config.cache_dir)
    common = {"backbone": config.backbone, "image_size": config.image_size, "git_commit": git_commit(),
              "versions": versions()}
    while methods:  # each method's prepared state (images, activations, models) goes before the next prepares
        spec, method = methods.pop(0)
        run_method(task, spec, method, episode_sets, config, cache, common, out, progress)
        del method
    frame = read_results(out)
    labels = [spec.label for spec in config.methods]
    manifests = [stream_id(e) for e in episode_sets.values()]
    keep = (frame["task"] == task.name) & frame["method"].isin(labels) & frame["manifest"].isin(manifests) \
        & (frame["episode"].astype(int) < config.episodes)
    return frame[keep].reset_index(drop=True)


def run_method(task: Task, spec: MethodSpec, method, episode_sets: dict[int, EpisodeSet], config: RunConfig,
               cache: Cache, common: dict, out: Path, progress: Progress) -> None:
    prepared = False
    for k, episodes in episode_sets.items():
        key = {"task": task.name, "method": spec.label, "config": method_config(method), "shots": k,
               "ways": config.ways, "queries": config.queries, "manifest": stream_id(episodes)}
        done = done_episodes(out, key)
        pending = [i for i in range(len(episodes)) if i not in done]
        if done:
            progress.log(f"{spec.label} {k}-shot: {len(done & set(range(len(episodes))))} episodes already in "
                         f"{out}, {len(pending)} to run")
        if not pending:
            continue
        if not prepared:
            started = time.perf_counter()
            method.prepare(Context(task, cache, config.backbone, config.image_size, config.seed, progress))
            progress.log(f"{spec.label}: prepared in {time.perf_counter() - started:.1f} s")
            prepared = True
        rows, last_flush, batched = [], time.perf_counter(), supports_batches(method)
        with progress.task(f"{spec.label} {k}-shot", len(pending)) as advance, saved_on_exit(out, rows):
            for i, result, seconds in episode_results(method, episodes, pending, config.seed, task.class_names):
                rows.append({"schema": SCHEMA_VERSION, **key, "seed": config.seed, "episode": i, **result,
                             "seconds": round(seconds, 6), **common,
                             "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")})
                advance(1)
                if (len(rows) >= FLUSH_EVERY_EPISODES and not batched) \
                        or time.perf_counter() - last_flush > FLUSH_EVERY_SECONDS:
                    append_rows(out, rows)
                    rows.clear()
                    last_flush = time.perf_counter()


def episode_results(method, episodes: EpisodeSet, pending: list[int], seed: int, class_names):
    """Yields (episode, score_episode's dict, seconds). Methods with `predict_batch` answer chunks of episodes
    at once (benchmark/fastpath.py; the same scores); their `seconds` is the chunk's time divided by its
    episodes. The others fit and predict episode by episode; `seconds` is that episode's fit + predict."""
    if supports_batches(method):
        yield from chunked_results(method, episodes, pending, class_names, time.perf_counter)
        return
    k = episodes.k_shot
    for i in pending:
        episode = episodes.episode(i)
        rng = np.random.default_rng([seed, k, i, 7919])
        started = time.perf_counter()
        method.fit(episode.support_idx, episode.support_y, episode.n_way, rng)
        scores = method.predict(episode.query_idx)
        seconds = time.perf_counter() - started
        yield i, score_episode(episode, scores, class_names), seconds
