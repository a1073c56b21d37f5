"""How a mapping method answers: what it is asked (`window_query`: fit on the labelled windows' handles,
scores for the classified windows' handles in handle order and in chunks), and the method created, prepared
and asked in this process (`answered_here`, `classify_windows`); benchmark/mapping/isolated.py asks it the
same in its sandbox."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from benchmark.mapping.context import SceneWindows
from benchmark.mapping.points import Points
from benchmark.runner import blamed, method_cache
from benchmark.scoring import check_scores
from common.settings import Settings
from methods.base import Context, Handed, handed
from methods.progress import SILENT, Progress
from tasks.handles import RowHandles


def softmax(scores: np.ndarray) -> np.ndarray:
    z = scores.astype(np.float64) - scores.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class WindowQuery:
    """What a method is asked of a map: fit on the labelled windows' handles and labels, then scores for the
    `targets` (grid positions, in the order of their `handles`, ascending) `chunk` windows at a time."""

    support: np.ndarray
    labels: np.ndarray
    n_way: int
    targets: np.ndarray
    handles: np.ndarray
    chunk: int

    def chunks(self):
        """(grid positions, handles) of each chunk, in the order they are asked; the handles a copy of their own
        (a view would lead to the other chunks' handles)."""
        for start in range(0, len(self.targets), self.chunk):
            yield self.targets[start : start + self.chunk], self.handles[start : start + self.chunk].copy()


def window_query(
    method, windows: SceneWindows, points: Points, chunk: int = 2048, classified: np.ndarray | None = None
) -> WindowQuery:
    """The labelled windows and the `classified` windows (default: all) by handle (`windows`, the harness's
    side, knows which window each is), asked in chunks (a transductive method: all in one, the scene's windows
    being its query) in handle order: positions say nothing."""
    targets = np.arange(windows.grid.n) if classified is None else np.flatnonzero(classified)
    if getattr(method, "transductive", False):  # its query is the scene: every classified window at once
        chunk = max(len(targets), 1)
    handles = windows.window_indices(targets)
    order = np.argsort(handles, kind="stable")
    support = windows.window_indices(points.windows)
    return WindowQuery(support, points.labels.copy(), len(points.class_names), targets[order], handles[order], chunk)


def classify_windows(
    method,
    windows: SceneWindows,
    points: Points,
    rng: np.random.Generator,
    chunk: int = 2048,
    progress: Progress = SILENT,
    classified: np.ndarray | None = None,
    label: str = "method",
) -> tuple[np.ndarray, dict]:
    """Fit the (prepared) method on the labelled windows, predict the `classified` windows (default: all) as
    window_query asks. What the method raises, and scores that cannot be scored, fail it: MethodFailed naming
    `label` and the stage (runner.blamed).

    Returns (probabilities (ny, nx, C) float32 = softmax of the method's scores, NaN for windows not
    classified; timings)."""
    query = window_query(method, windows, points, chunk, classified)
    started = time.perf_counter()
    with blamed(label, "fit"):
        method.fit(query.support, query.labels, query.n_way, rng)  # the method's own copies
    fitted = time.perf_counter()
    probs = np.full((windows.grid.n, query.n_way), np.nan, np.float32)
    with progress.bar(f"classifying {len(query.targets)} windows", len(query.targets)) as advance:
        for targets, handles in query.chunks():
            with blamed(label, "predict"):
                scores = check_scores(method.predict(handles), (len(targets), query.n_way), "", "windows x classes")
            probs[targets] = softmax(scores)
            advance(len(targets))
    shape = (*windows.grid.shape, query.n_way)
    return probs.reshape(shape), {"fit_s": fitted - started, "predict_s": time.perf_counter() - fitted}


def fit_seed(settings: Settings) -> list[int]:
    """The seed of the generator a method is fitted with (the same in its sandbox)."""
    return [int(settings.seed), 7919]


def answered_here(
    method_spec, task, windows: SceneWindows, points: Points, cache, settings: Settings, options, classified
) -> tuple:
    """(the method, the probabilities classify_windows gives, timings): the method created, prepared and asked
    in this process."""
    from methods.registry import create_method

    method = create_method(method_spec.name, **method_spec.options)
    ctx = map_context(method, task, windows, cache, settings)
    started = time.perf_counter()
    with blamed(method_spec.label, "prepare"):  # a plugin's crash is its own failure, not the run's
        method.prepare(ctx)
    timings = {"prepare_s": time.perf_counter() - started}
    windows.progress.log(
        f"{method_spec.label}: prepared (base task and {windows.grid.n} windows) in {timings['prepare_s']:.1f} s"
    )
    probs, t = classify_windows(
        method,
        windows,
        points,
        np.random.default_rng(fit_seed(settings)),
        options.chunk,
        windows.progress,
        None if classified.all() else classified,
        method_spec.label,
    )
    return method, probs, {**timings, **t}


def map_context(method, task, windows: SceneWindows, cache, settings: Settings) -> Context:
    """What `method` prepares on: a plain Context of the base task's rows (handed as for `bench run`, with
    `settings`' backbone, image size, seed and device) followed by the scene's windows in handle order, holding
    what the method consumes and nothing of where a window lies."""
    return Context.of(
        windows.handed(base_handed(method, task, windows, cache)),
        method_cache(cache, method),
        backbone=windows.backbone,
        image_size=windows.image_size,
        seed=settings.seed,
        progress=windows.progress,
        device=windows.device,
    )


def base_handed(method, task, windows: SceneWindows, cache) -> Handed:
    """The base task's rows as `bench run` hands them to `method` (the arrays it consumes), before the windows;
    their handles are their row numbers: labelled rows, whose numbers say nothing of windows."""
    return handed(
        task,
        cache,
        windows.backbone,
        windows.image_size,
        type(method).consumes,
        windows.progress,
        windows.device,
        RowHandles.identity(len(task.table)),
    )


ALONE_WINDOWS = 64  # classified windows of a map asked again one at a time (a predict call each)


def alone_request(query: WindowQuery, settings: Settings) -> tuple[dict, np.ndarray]:
    """(the request, the grid positions it asks): fit as the map did, then ALONE_WINDOWS of the classified
    windows, drawn from the seed, each predicted on its own (benchmark/answer_checks.py's "alone")."""
    from benchmark.answer_checks import rows_to_ask

    picked = rows_to_ask(len(query.targets), ALONE_WINDOWS, int(settings.seed))
    request = {
        "op": "map",
        "train": query.support.tolist(),
        "train_y": query.labels.tolist(),
        "test": query.handles[picked].tolist(),
        "n_classes": int(query.n_way),
        "chunk": 1,
        "rng": fit_seed(settings),
    }
    return request, query.targets[picked]


def check_alone(label: str, probs: np.ndarray, targets: np.ndarray, scores, device) -> None:
    """Fail the method (MethodFailed) where the windows at grid positions `targets`, asked on their own, got
    `scores` whose probabilities are not those the map gave them among the other windows."""
    from benchmark import answer_checks

    with blamed(label, answer_checks.STAGE):
        alone = softmax(check_scores(scores, (len(targets), probs.shape[-1]), "", "windows x classes"))
    if not answer_checks.same_alone(probs.reshape(-1, probs.shape[-1])[targets], alone, device):
        raise answer_checks.refused(label, "alone", "the map's windows", 1, 1)


def checked_here(method_spec, method, task, windows: SceneWindows, points: Points, cache, settings, options, answered):
    """After a map made in this process (`answered`: its probabilities and the classified windows): a fresh
    process prepared like this one (from the method's cache) is asked some of its windows one at a time
    (alone_request); an inductive method must give them the same probabilities (check_alone). A transductive
    one is not asked."""
    if getattr(method, "transductive", False):
        return
    from benchmark.answer_checks import answered_by_fresh_process

    probs, classified = answered
    query = window_query(method, windows, points, options.chunk, None if classified.all() else classified)
    if not len(query.targets):  # nothing was asked
        return
    request, targets = alone_request(query, settings)
    given = windows.handed(base_handed(method, task, windows, cache))
    prepared_with = (windows.backbone, windows.image_size, settings.seed, windows.device)
    scores = answered_by_fresh_process(method_spec, method, given, cache, prepared_with, {"alone": request})["alone"]
    check_alone(method_spec.label, probs, targets, scores, windows.device)
    windows.progress.log(f"{method_spec.label}: {len(targets)} windows answered again, each on its own: the same")
