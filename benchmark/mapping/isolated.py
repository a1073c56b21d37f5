"""`bench map --isolate` and `bench craters run --isolate`: the mapping method in a bubblewrap sandbox.

In-process, a plugin could leave what it is handed and read the disk: the harness's cache (the windows'
features in grid order, which matched against its handle-order features tell where each window lies), the
scene file, or the crater file that scores the map. Here it is described, prepared and asked only in
benchmark/sandbox.py's sandboxed processes, which hold none of them: it is handed the base task's rows and
the windows in handle order exactly as in-process (`SceneWindows.handed`: the windows' pixels as a file of its
own, memory-mapped there), is prepared as `bench run --isolate` prepares it, and one fresh fork of the
prepared process fits it on the labelled windows' handles and answers the classified windows' handles, in
the order and chunks `classify_windows` asks them (`window_query`). The harness turns the scores into the map:
the same map as in-process for every built-in method.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmark.answer_checks import STAGE
from benchmark.mapping.answers import alone_request, base_handed, check_alone, fit_seed, softmax, window_query
from benchmark.mapping.context import SceneWindows
from benchmark.mapping.points import Points
from benchmark.runner import method_cache
from benchmark.sandbox import (
    IsolatedMethod,
    MethodProcess,
    MethodProcessFailed,
    Placement,
    describe_isolated,
    serving_process,
    settings_meta,
)
from benchmark.scoring import MethodFailed, ScoreError, check_scores
from common.settings import Settings


def hidden_folders(*folders) -> tuple[Path, ...]:
    """What a sandboxed mapping method must never see besides what the sandbox leaves out anyway: the given
    folders (data, scene, labels, outputs, cache) and the user's home, resolved."""
    return tuple(dict.fromkeys(Path(f).expanduser().resolve() for f in (*folders, Path.home()) if f is not None))


def described(method_spec, cache, hidden: tuple[Path, ...], device) -> IsolatedMethod:
    """`method_spec`'s method as a sandboxed process describes it (no code of it runs here)."""
    place = Placement(True, cache.folder("methods", "describe").root, tuple(hidden), str(device))
    return describe_isolated(method_spec.name, method_spec.options, place)


def answered_in_sandbox(
    method_spec,
    task,
    windows: SceneWindows,
    points: Points,
    cache,
    settings: Settings,
    options,
    classified: np.ndarray,
    hidden: tuple[Path, ...],
) -> tuple:
    """(the described method, the probabilities classify_windows gives in-process, timings): the method
    prepared in its sandbox on the base task and the windows, then fitted and asked by a fresh fork there."""
    method = described(method_spec, cache, hidden, windows.device)
    label = method_spec.label
    meta = settings_meta(
        method.name, method.options, windows.backbone, windows.image_size, settings.seed, str(windows.device)
    )
    given = windows.handed(base_handed(method, task, windows, cache))
    place = Placement(True, method_cache(cache, method).root, tuple(hidden), str(windows.device))
    started = time.perf_counter()
    try:
        process = serving_process(meta, given, place, windows.progress)
    except MethodProcessFailed as exc:
        raise MethodFailed(label, "prepare", " in its sandbox", exc) from None
    del given  # the sandbox reads its own files of them
    try:
        timings = {"prepare_s": time.perf_counter() - started}
        query = window_query(method, windows, points, options.chunk, None if classified.all() else classified)
        probs, timings["fit_predict_s"] = sandboxed_probabilities(process, query, windows, settings, label)
        if not method.transductive and len(query.targets):  # a fresh fork asks some windows alone: the same
            request, targets = alone_request(query, settings)
            try:
                scores, _ = process.request(request)
            except MethodProcessFailed as exc:
                raise MethodFailed(label, STAGE, " in its sandbox", exc) from None
            check_alone(label, probs, targets, scores, windows.device)
    finally:
        process.close()
    return method, probs, timings


def sandboxed_probabilities(process: MethodProcess, query, windows: SceneWindows, settings: Settings, label: str):
    """((ny, nx, C) probabilities as classify_windows makes them, seconds): one request, answered by a fresh
    fork that fits the method and predicts the query's chunks in order."""
    request = {
        "op": "map",
        "train": query.support.tolist(),
        "train_y": query.labels.tolist(),
        "test": query.handles.tolist(),
        "n_classes": int(query.n_way),
        "chunk": int(query.chunk),
        "rng": fit_seed(settings),
    }
    started = time.perf_counter()
    with windows.progress.bar(f"classifying {len(query.targets)} windows", len(query.targets)) as advance:
        try:
            scores, _ = process.request(request)
        except MethodProcessFailed as exc:
            raise MethodFailed(label, "fit or predict", " in its sandbox", exc) from None
        try:  # scores that cannot be scored fail the method, as in-process (answers.classify_windows)
            scores = check_scores(scores, (len(query.targets), query.n_way), "", "windows x classes")
        except ScoreError as exc:
            raise MethodFailed(label, "predict", " in its sandbox", exc) from None
        advance(len(query.targets))
    probs = np.full((windows.grid.n, query.n_way), np.nan, np.float32)
    done = 0
    for targets, _ in query.chunks():  # chunk by chunk, as in-process
        probs[targets] = softmax(scores[done : done + len(targets)])
        done += len(targets)
    return probs.reshape(*windows.grid.shape, query.n_way), time.perf_counter() - started
