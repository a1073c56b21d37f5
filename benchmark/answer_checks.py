"""The checks that a method's answers depend only on what it is asked, for every protocol that scores them.

A method's answer to an episode (a fixed-K seed) may depend on that episode and its prepared state, never on
the episodes it answered before (memory: a target image is a support in one episode and a query in another);
and, unless it says it is transductive, a query's scores never depend on the other queries it is asked with.
After a method has answered, a few of its episodes are asked again: as they were asked, by a fresh process
prepared like this one from the method's cache (where the method ran in this process), and with each query
on its own (an inductive method; in that fresh process, or under --isolate by fresh forks of its sandbox).
Scores that differ fail the method. The protocols choose what to ask again and what to do with the rows.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from benchmark import runner
from benchmark.scoring import MethodFailed, ScoreError
from methods.base import handed
from methods.devices import resolve_device
from methods.progress import Progress

STAGE = "the check of its answers"
REASONS = {
    "again": "answers depend on earlier episodes: {what}, answered again by a fresh process, gets other scores",
    "alone": "answers depend on the other queries it is asked with, yet it says it is inductive: {what}, with "
    "each query answered on its own, gets other scores (a method whose predict reads its query set sets "
    "transductive = True)",
}


def same_answers(first: np.ndarray, again: np.ndarray) -> bool:
    """Scores of one episode answered twice agree: the same predictions, and the same numbers to float noise."""
    first, again = np.asarray(first, np.float64), np.asarray(again, np.float64)
    if first.shape != again.shape:
        return False
    if first.ndim >= 1 and first.size and not np.array_equal(first.argmax(-1), again.argmax(-1)):
        return False
    return bool(np.allclose(first, again, rtol=1e-4, atol=1e-5, equal_nan=True))


def alone_tolerance(device) -> float:
    """How far (relative to the scores' scale) a query's scores asked alone may be from those asked with the
    others: float noise of a batch of another size. A GPU's convolutions round in TF32 by default (about 1e-3
    relative), a CPU's in float32."""
    kind = getattr(device, "type", None) or str(device or "auto").split(":")[0]
    return 1e-4 if (resolve_device(kind).type if kind == "auto" else kind) == "cpu" else 1e-2


def same_alone(together, alone, device) -> bool:
    """Scores of queries answered together and each on its own agree to float noise (alone_tolerance; a batch
    of another size may round otherwise and flip an exact tie, so predictions are not compared)."""
    together, alone = np.asarray(together, np.float64), np.asarray(alone, np.float64)
    if together.shape != alone.shape:
        return False
    tol = alone_tolerance(device)
    scale = float(np.nanmax(np.abs(together))) if together.size and np.isfinite(together).any() else 1.0
    return bool(np.allclose(together, alone, rtol=tol, atol=0.1 * tol * max(scale, 1.0), equal_nan=True))


def checkable(executor) -> bool:
    """Whether answers can be asked again where the method ran: this process, or its sandbox (not Ray's
    workers, which keep no prepared method for the driver to ask)."""
    return executor is None or hasattr(executor, "answered_again") or not hasattr(executor, "prepare")


def asks_again(executor) -> bool:
    """Whether to ask the episodes again as they were asked: where the method ran in this process, which may
    have kept something from episode to episode (a sandbox answers each from a fresh fork anyway)."""
    return not hasattr(executor, "answered_again")


def hows(method, executor) -> list[str]:
    """What to ask again, in the order to ask it: "alone" (unless the method says it is transductive) first, so
    that the fresh process has seen no episode's whole query when it is asked its queries one at a time (it
    could replay the scores it gave them together), then "again" (asks_again)."""
    alone = [] if getattr(method, "transductive", False) else ["alone"]
    return alone + (["again"] if asks_again(executor) else [])


class Asked(NamedTuple):
    """A method as a protocol prepared it: what a fresh process needs to prepare it again the same way."""

    spec: object  # runner.MethodSpec
    method: object
    task: object  # the task it was prepared on
    cache: object
    config: object  # backbone, image size, device
    handles: object  # tasks.handles.RowHandles


def rows_to_ask(n: int, limit: int, *seed: int):
    """Positions of `limit` of `n` rows (all, if fewer), drawn from `seed`, ascending: what a check asks alone."""
    return np.sort(np.random.default_rng([*seed, 2718]).permutation(n)[:limit])


def answered_by_fresh_process(spec, method, given, cache, settings: tuple, requests: dict) -> dict:
    """{key: scores} for `requests` ({key: a benchmark/method_child request}) from a fresh process prepared on
    `given` (the arrays the method was handed) and its cache, with `settings` (backbone, image size, seed,
    device) as it was prepared. What the method raises there is its failure."""
    from benchmark.sandbox import answered_again, settings_meta

    meta = settings_meta(spec.name, spec.options, *settings[:3], str(settings[3]))
    with runner.blamed(spec.label, STAGE):
        return answered_again(meta, given, runner.method_cache(cache, method).root, requests)


def answered_again(asked: Asked, seed: int, requests: dict, executor, progress: Progress) -> dict:
    """{key: scores} for `requests`: by fresh forks of the method's sandbox where it runs isolated, else by a
    fresh process prepared like this one (answered_by_fresh_process, with the seed it was prepared with)."""
    if hasattr(executor, "answered_again"):
        with runner.blamed(asked.spec.label, STAGE):
            return executor.answered_again(requests)
    config = asked.config
    given = handed(
        asked.task,
        asked.cache,
        config.backbone,
        config.image_size,
        type(asked.method).consumes,
        progress,
        config.device,
        asked.handles,
    )
    settings = (config.backbone, config.image_size, seed, config.device)
    return answered_by_fresh_process(asked.spec, asked.method, given, asked.cache, settings, requests)


def refused(label: str, how: str, what: str, changed: int, checked: int, rows: str = "") -> MethodFailed:
    """The failure of a method whose answers changed when asked again (`how` "again") or with each query on its
    own ("alone"); `what` names the first that changed ("episode 3 at 5 shots"), `rows` what became of its
    rows."""
    return MethodFailed(
        label,
        STAGE,
        "",
        ScoreError(f"{REASONS[how].format(what=what)} ({changed} of {checked} checked differ){rows}"),
    )
