"""The harness's method-level machinery, shared by the protocols (benchmark/protocols/) that
benchmark/pipeline.run runs: the settings (MethodSpec, BenchConfig, RunConfig), creating and preparing a
method (here or in its sandbox), the executor that answers, `blamed` (a method's failure is that method's),
and how a method answers episodes and is checked for answers that depend on earlier episodes.
`bench run` is the episode protocol (benchmark/protocols/episodes.py: run_benchmark) run by the pipeline."""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmark import interrupts
from benchmark.fastpath import chunked_answers, in_query_order, score_chunk, supports_batches
from benchmark.provenance import method_conditions
from benchmark.scoring import MethodFailed, ScoreError, score_episode
from common.errors import UserError
from common.settings import DEFAULTS
from methods.base import Context, handed
from methods.cache import Cache
from methods.devices import CPU
from methods.progress import SILENT, Progress
from methods.registry import create_method
from tasks.episodes import BlindEpisodes, EpisodeSet, in_row_order
from tasks.handles import RowHandles
from tasks.registry import Task

FLUSH_EVERY_EPISODES = 20  # one-by-one methods; batched ones (fastpath) answer ~50 episodes in milliseconds,
FLUSH_EVERY_SECONDS = 2.0  # so they flush by time only: a kill loses at most 2 s of work either way


@dataclass
class MethodSpec:
    """`name` or `name:key=value,key=value` from the command line."""

    name: str
    options: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> MethodSpec:
        name, _, rest = text.partition(":")
        options = {}
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UserError(f"bad method option {item!r} in --method {text}; use NAME:key=value,key=value")
            if key.strip() in options:  # which one was meant? (the last silently winning hid a typo)
                raise UserError(
                    f"--method {text} gives option {key.strip()} twice; give each option once (to run "
                    "both settings, repeat --method)"
                )
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
    task: str = DEFAULTS.task
    shots: list[int] = field(default_factory=lambda: list(DEFAULTS.shots))
    data_dir: Path = DEFAULTS.data_dir
    cache_dir: Path | None = None
    out: Path | None = None
    backbone: str = DEFAULTS.backbone
    image_size: int = DEFAULTS.image_size
    fresh: bool = False  # set the file's rows of these measurements aside and recompute them
    reuse_stale: bool = False  # take rows made by another git commit when everything else matches
    stop_on_failure: bool = False  # a failing method ends the run (else the others still run)
    source: str | None = None  # --source: the base pool every pre-training method uses (tasks.registry.with_source)
    source_disjoint: bool = False  # refuse a source that holds a scene of the target pool
    device: torch.device = CPU  # where every network pass runs (methods/devices.py); recorded in each row
    executor: str = "local"  # who answers the episodes: "local" (this process) or "ray" (benchmark/executors.py)
    ray_address: str | None = None  # with "ray": a running instance ("auto", host:port); None starts a local one
    isolate: bool = False  # every method prepared and answered in a sandbox (benchmark/sandbox.py)
    ray_timeout: float = DEFAULTS.ray_timeout  # seconds ray_address may take to answer, else a one-line error
    results_suffix = ""

    def results_path(self) -> Path:
        return Path(self.out) if self.out else DEFAULTS.runs / f"{file_stem(self.task)}{self.results_suffix}.csv"


@dataclass
class RunConfig(BenchConfig):
    n_way: int = DEFAULTS.n_way
    n_query: int = DEFAULTS.n_query
    episodes: int = DEFAULTS.episodes
    seed: int = DEFAULTS.seed
    split: str = DEFAULTS.split  # or "validation": episodes from the base pool's slice (Task.validation)

    def results_path(self) -> Path:
        if self.out or self.split == DEFAULTS.splits[0]:
            return super().results_path()
        return DEFAULTS.runs / f"{file_stem(self.task)}-{self.split}{self.results_suffix}.csv"


def file_stem(task: str) -> str:
    """A task name as a file name: `folder:/data/mine` -> `folder__data_mine`."""
    return task.replace(":", "_").replace("/", "_")


def stream_id(episodes: EpisodeSet) -> str:
    """Names the episode stream (not its length), so a longer run extends a shorter one."""
    return hashlib.sha256(episodes.stream.encode()).hexdigest()[:16]


def manifest_path(folder: Path, task: Task, episodes: EpisodeSet) -> Path:
    return folder / (
        f"{file_stem(task.name)}-{episodes.n_way}w{episodes.n_shot}s{episodes.n_query}q-"
        f"seed{episodes.seed}-{stream_id(episodes)}.npz"
    )


def save_manifest(episodes: EpisodeSet, path: Path, progress: Progress = SILENT) -> None:
    """Write the stream's manifest unless one as long or longer is there: a 10-episode run must not shrink the
    manifest of the 600 episodes already in the results file (a stream's episode i never changes). A damaged
    one is redrawn from the seed and rewritten (atomically, like every manifest)."""
    if path.exists():
        try:
            if len(EpisodeSet.load(path)) >= len(episodes):
                return
        except UserError as exc:
            progress.log(f"warning: {exc}; rewriting it from the seed")
    episodes.save(path)


def conditions(task: Task, config: BenchConfig, methods) -> list[dict]:
    """What determines the rows of each method besides what was asked for (see benchmark/results.Schema)."""
    return method_conditions(task, config.backbone, config.image_size, config.device, methods, config.isolate)


def method_cache(cache: Cache, method) -> Cache:
    """The cache folder a method writes to: `<cache>/methods/<the package of its class>`. The built-ins share one
    (SDFT's variants and base-classifier read one step-1 checkpoint); a plugin gets its own. None of the
    harness's entries (the dataset's digests, images and features in row order) lie under it."""
    package = type(method).__module__.split(".")[0] or "unnamed"
    return cache.folder("methods", package)


def method_context(
    task: Task,
    method,
    cache: Cache,
    backbone: str,
    image_size: int,
    seed: int = 0,
    progress: Progress = SILENT,
    device: torch.device = CPU,
    handles: RowHandles | None = None,
) -> Context:
    """The Context `method` is prepared with: the arrays it consumes, in handle order, computed with the
    harness's `cache`; its own cache folder (method_cache)."""
    given = handed(
        task, cache, backbone, image_size, getattr(type(method), "consumes", "images"), progress, device, handles
    )
    return Context.of(
        given,
        method_cache(cache, method),
        backbone=backbone,
        image_size=image_size,
        seed=seed,
        progress=progress,
        device=device,
    )


@contextmanager
def blamed(label: str, stage: str, where: str = ""):
    """Exceptions inside the block are the method's: MethodFailed naming it. So are SystemExit (a plugin's
    sys.exit must not end the run) and a KeyboardInterrupt that no SIGINT caused (benchmark/interrupts.py);
    the user's Ctrl-C passes through, and so does a UserError, which names the input at fault."""
    try:
        yield
    except ScoreError as exc:
        raise MethodFailed(label, stage, where, exc) from exc
    except UserError:  # bad input (a corrupt image, a full cache folder) that names itself: not the method's
        raise
    except KeyboardInterrupt as exc:
        if interrupts.by_user():
            raise
        raise MethodFailed(label, stage, where, exc) from exc
    except (Exception, SystemExit) as exc:
        raise MethodFailed(label, stage, where, exc) from exc


def hidden_paths(config: BenchConfig, cache: Cache, out: Path) -> list[Path]:
    """What a sandboxed method must never see: the data, the results (and manifests) folder, the harness's
    cache and the user's home."""
    return [Path(config.data_dir), Path(out).resolve().parent, cache.root, Path.home()]


def created_methods(config: BenchConfig, cache: Cache, out: Path) -> list[tuple]:
    """(spec, method) of each --method: created here, or under --isolate in a sandbox that describes it (no code
    of the method runs in this process)."""
    if not config.isolate:
        return [(spec, create_method(spec.name, **spec.options)) for spec in config.methods]
    from benchmark.sandbox import Placement, describe_isolated

    place = Placement(
        True, cache.folder("methods", "describe").root, tuple(hidden_paths(config, cache, out)), str(config.device)
    )
    return [(spec, describe_isolated(spec.name, spec.options, place)) for spec in config.methods]


def make_executor(config: BenchConfig, cache: Cache, out: Path, progress: Progress):
    if config.isolate:
        from benchmark.sandbox import SandboxExecutor

        return SandboxExecutor(hidden_paths(config, cache, out), Answered, progress)
    if config.executor == "ray":
        from benchmark.executors import RayExecutor

        return RayExecutor(config.ray_address, progress.log, episode_answers, config.ray_timeout)
    return None


def prepared_by(
    executor, method, task: Task, cache: Cache, config: BenchConfig, seed: int, progress: Progress, handles: RowHandles
) -> None:
    """Prepare `method` for `task` with `config`'s backbone, image size and device: here, or in its sandbox
    where the executor prepares methods (benchmark/sandbox.py)."""
    if hasattr(executor, "prepare"):
        given = handed(
            task, cache, config.backbone, config.image_size, type(method).consumes, progress, config.device, handles
        )
        executor.prepare(
            method,
            given,
            method_cache(cache, method).root,
            config.backbone,
            config.image_size,
            seed,
            str(config.device),
        )
    else:
        method.prepare(
            method_context(
                task, method, cache, config.backbone, config.image_size, seed, progress, config.device, handles
            )
        )


class Manifests:
    """Writes a stream's manifest when its first rows are written (a run that fails before any episode leaves
    no manifests/ folder)."""

    def __init__(self, folder: Path, task: Task, progress: Progress):
        self.folder, self.task, self.progress, self.saved = folder, task, progress, set()

    def ensure(self, episodes: EpisodeSet) -> None:
        if id(episodes) not in self.saved:
            save_manifest(episodes, manifest_path(self.folder, self.task, episodes), self.progress)
            self.saved.add(id(episodes))


CHECKED_EPISODES = 3  # per method and shots: the last episode answered, and others drawn from the seed


def episodes_to_check(pending: list[int], seed: int, k: int) -> list[int]:
    """Which of this run's episodes a fresh process answers again: the last one (a method that remembers earlier
    episodes has seen the most before it) and others drawn from the seed."""
    if not pending or CHECKED_EPISODES < 1:
        return []
    others = [i for i in pending[:-1]]
    drawn = np.random.default_rng([seed, k, 2718]).permutation(len(others))[: CHECKED_EPISODES - 1]
    return sorted({pending[-1], *(others[j] for j in drawn)})


@contextmanager
def saved_on_exit(flush):
    """Write the finished episodes' rows when the block ends, also by Ctrl-C or a failure in a later episode."""
    try:
        yield
    finally:
        flush()


def episode_results(
    method,
    episodes: EpisodeSet,
    pending: list[int],
    seed: int,
    class_names,
    label: str = "method",
    executor=None,
    handles: RowHandles | None = None,
    kept: dict | None = None,
):
    """Yields (episode, scoring.score_episode's dict, seconds). The method answers the episodes' query-blind view
    (episode_answers: here, or on `executor`'s workers, which receive nothing else), and this process, which
    holds the episode set, scores what it answered. What the method raises or returns unscorable becomes
    MethodFailed. `kept`: {episode: None}; the scores answered for those episodes are put there (as answered, for
    the blind view's query order)."""
    blind = episodes.blind(handles)
    query = episodes.query if handles is None else handles.of_rows(episodes.query)
    answers = (
        episode_answers(method, blind, pending, seed, label)
        if executor is None
        else executor.answers(method, blind, pending, seed, label)
    )
    for answered in answers:
        chunk = list(answered.episodes)
        with blamed(label, answered.stage, answered.where):
            if answered.batched:
                scores = in_query_order(answered.scores, in_row_order(query[chunk])[1])
                results = score_chunk(episodes, chunk, scores, class_names)
            else:
                scores = in_query_order(answered.scores, in_row_order(query[chunk[0]])[1])
                results = [score_episode(episodes.episode(chunk[0]), scores, class_names)]
        for j, i in enumerate(chunk):
            if kept is not None and i in kept:
                kept[i] = np.array(answered.scores[j] if answered.batched else answered.scores, copy=True)
        yield from ((i, result, answered.seconds) for i, result in zip(chunk, results))


@dataclass(frozen=True)
class Answered:
    """A method's scores for one episode (fit + predict) or a chunk of episodes (predict_batch), before the
    harness scores them: for the query rows of the blind view (ascending), as the method saw them."""

    episodes: tuple[int, ...]
    scores: np.ndarray  # (n_query, n_way); batched: (len(episodes), n_query, n_way)
    seconds: float  # each episode's
    batched: bool
    where: str  # names the episodes in an error

    @property
    def stage(self) -> str:
        return "predict_batch" if self.batched else "predict"


def episode_answers(method, blind: BlindEpisodes, pending: list[int], seed: int, label: str = "method"):
    """Yields Answered for `pending`, in order: what runs where the method runs (this process, a Ray worker),
    from the query-blind view alone. Methods with `predict_batch` answer chunks of episodes at once
    (benchmark/fastpath.py; the same scores), `seconds` being the chunk's time divided by its episodes; the
    others fit and predict episode by episode, `seconds` being that episode's fit + predict."""
    if supports_batches(method):
        where = f" (episodes {pending[0]}-{pending[-1]})"
        with blamed(label, "predict_batch", where):
            for chunk, scores, seconds in chunked_answers(method, blind, pending, time.perf_counter):
                yield Answered(tuple(chunk), scores, seconds, True, where)
        return
    k = blind.n_shot
    for i in pending:
        episode = blind.episode(i)
        rng = np.random.default_rng([seed, k, i, 7919])
        started = time.perf_counter()
        # copies: what a method does to its arguments never reaches the episodes or the scoring
        named = {"classes": episode.classes.copy()} if getattr(method, "takes_classes", False) else {}
        with blamed(label, "fit", f" on episode {i}"):
            method.fit(episode.support_idx.copy(), episode.support_y.copy(), episode.n_way, rng, **named)
        with blamed(label, "predict", f" on episode {i}"):
            scores = np.asarray(method.predict(episode.query_idx.copy()))
        yield Answered((i,), scores, time.perf_counter() - started, False, f" on episode {i}")
