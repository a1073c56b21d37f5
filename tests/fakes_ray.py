"""Plugin methods for the Ray executor's tests: protonet whose first batch on a Ray worker kills that worker's
process (once: a marker file says it happened), as a machine lost mid-run would; and spies that search the
process they answer in for query labels, as an adversarial plugin would."""

from __future__ import annotations

import os

import numpy as np

from methods.base import FewShotMethod
from methods.protonet import ProtoNet
from methods.registry import register_method


@register_method("die-once")
class DieOnce(ProtoNet):
    description = "test only: protonet that kills its Ray worker process on its first batch"

    def __init__(self, marker: str = ""):
        super().__init__()
        self.marker = marker
        self.driver = os.getpid()  # never kill the process that runs the harness

    def predict_batch(self, support_idx, support_y, query_idx, n_way):
        if self.marker and os.getpid() != self.driver and not os.path.exists(self.marker):
            with open(self.marker, "w") as f:
                f.write(str(os.getpid()))
            os._exit(1)
        return super().predict_batch(support_idx, support_y, query_idx, n_way)


def labels_in_reach() -> list[str]:
    """What an adversary inside a method finds of query or test labels in its own process: the Ray executor's
    held values, and every object the garbage collector tracks (and what those hold) that is an episode set, an
    episode or a fixed-K draw with labels, or any object with a `query_y` or `test_y` field."""
    import gc
    import importlib
    import warnings

    from tasks.episodes import Episode, EpisodeSet
    from tasks.protocols import FixedKSet

    labelled = (EpisodeSet, Episode, FixedKSet)

    def with_labels(obj) -> bool:
        if isinstance(obj, labelled):
            return True
        fields = getattr(type(obj), "__dataclass_fields__", None) or getattr(type(obj), "_fields", None) or ()
        return "query_y" in fields or "test_y" in fields

    held = importlib.import_module("benchmark.executors")._held.values()
    found = [f"executors._held: {type(v).__name__}" for v in held if with_labels(v)]
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # isinstance on deprecated torch aliases warns
        for obj in gc.get_objects():  # ~1 s with torch imported: spies look once per process and stage
            for o in (obj, *gc.get_referents(obj)):
                if id(o) not in seen and with_labels(o):
                    seen.add(id(o))
                    found.append(f"gc: {type(o).__name__}")
    return found


class Spy:
    """Appends what labels_in_reach finds, with its process id and what the executor holds, to `report`: the
    first time each stage runs in a process (a worker unpickles its own copy of the method, with no looks)."""

    report: str = ""

    def look(self, stage: str) -> None:
        import importlib
        import json

        looked = self.__dict__.setdefault("looked", set())
        if (os.getpid(), stage) in looked:
            return
        looked.add((os.getpid(), stage))

        held = [type(v).__name__ for v in importlib.import_module("benchmark.executors")._held.values()]
        line = json.dumps({"pid": os.getpid(), "stage": stage, "held": held, "found": labels_in_reach()})
        with open(self.report, "a") as f:
            f.write(line + "\n")


@register_method("label-spy")
class LabelSpy(Spy, FewShotMethod):
    description = "test only: searches its process for query labels in fit and predict; answers class 0"

    def __init__(self, report: str = ""):
        self.report = report

    def fit(self, support_idx, support_y, n_way, rng):
        self.look("fit")
        self.n_way = n_way

    def predict(self, query_idx):
        self.look("predict")
        return np.zeros((len(query_idx), self.n_way), np.float32)


@register_method("label-spy-batched")
class BatchedLabelSpy(Spy, ProtoNet):
    description = "test only: protonet that searches its process for query labels in predict_batch"

    def __init__(self, report: str = ""):
        super().__init__()
        self.report = report

    def predict_batch(self, support_idx, support_y, query_idx, n_way):
        self.look("predict_batch")
        return super().predict_batch(support_idx, support_y, query_idx, n_way)


@register_method("exits-in-fit")
class ExitsInFit(FewShotMethod):
    description = "test only: calls sys.exit(0) in fit (in a Ray worker, Ray would take it for the worker's exit)"

    def fit(self, support_idx, support_y, n_way, rng):
        raise SystemExit(0)

    def predict(self, query_idx):
        raise AssertionError("never reached")


@register_method("interrupts-in-fit")
class InterruptsInFit(ExitsInFit):
    description = "test only: raises KeyboardInterrupt in fit (in a Ray worker, Ray would take it for a cancel)"

    def fit(self, support_idx, support_y, n_way, rng):
        raise KeyboardInterrupt
