"""A few-shot method: prepare once per task, then per episode fit on the support set and predict the query.

The harness hands a method a sealed `Context` in `prepare`: arrays of every row (decoded images or frozen
features), the base pool (its rows, labels and groups, and scene-disjoint episodes drawn from it), a cache
folder of the method's own, backbone, image size, seed and progress. Rows are addressed by handles
(tasks/handles.py): numbers whose value and order say nothing about a row's class or scene. The context holds
no task, no table, no file path and nothing from which the labels of target rows can be reached; every array
it returns is the method's own copy. Per episode `fit` gets copies of the support's handles and labels and
`predict` the query's handles in ascending order (never its labels), and the harness scores the returned
scores itself, so no method can score itself or change what another method sees. docs/adding-a-method.md
says what is and is not in scope of this boundary.
"""

from __future__ import annotations

import copy
from dataclasses import InitVar, dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from common.errors import UserError
from common.settings import DEFAULTS
from methods.cache import Cache, cache_key
from methods.concat import ConcatRows
from methods.devices import CPU, to_numpy
from methods.features import features_key, frozen_features, image_array, images_key
from methods.progress import SILENT, Progress
from methods.registry import recorded_config
from tasks.datasets import ImageTable
from tasks.episodes import PoolIndex
from tasks.handles import HANDLES_VERSION, RowHandles
from tasks.registry import Task

CONSUMES = ("images", "features", "both")


@dataclass(frozen=True, eq=False)
class RowFiles(ImageTable):
    """The image files of a task's rows, in row order, without labels, groups or splits: what decoding images
    and extracting features need. It answers `fingerprint()` and `identity()` with the task table's own, so
    that images and features share their cache entries with the table's. Only the harness holds one."""

    table_fingerprint: str = ""
    table_identity: str = ""

    @classmethod
    def of(cls, table: ImageTable) -> RowFiles:
        paths = np.array(table.paths, dtype=object)  # a copy: nothing leads back to the table's frame
        frame = pd.DataFrame({"path": paths, "label": np.full(len(paths), -1, np.int64), "group": "", "split": ""})
        return cls(
            name=table.name,
            frame=frame,
            class_names=(),
            table_fingerprint=table.fingerprint(),
            table_identity=table.identity(),
        )

    def fingerprint(self, cache_dir=None) -> str:
        return self.table_fingerprint

    def identity(self) -> str:
        return self.table_identity


def _owned(array: np.ndarray | ConcatRows) -> np.ndarray | ConcatRows:
    """A read-only copy that shares memory with nothing (its `.base` leads nowhere); of a `ConcatRows`, another
    view of its read-only parts (a map's windows stay a memory map)."""
    if isinstance(array, ConcatRows):
        return array.copy()
    out = np.array(array, copy=True)
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class Handed:
    """Everything a Context gives a method, as plain values and arrays in handle order: what the harness hands
    over in-process, and what it writes for a sandboxed method (benchmark/sandbox.py)."""

    task_key: str  # identifies the task (rows, labels and pools) for cache keys
    n_rows: int
    base: np.ndarray  # handles of the base pool, in the task's base-pool order
    base_labels: np.ndarray
    base_groups: np.ndarray
    episode_classes: np.ndarray
    keys: dict  # features / images / base_images: the cache keys of the arrays below
    features: np.ndarray | None = None  # (n_rows, D) in handle order, when the method consumes features
    # (n_rows, 3, S, S) uint8 in handle order, when it consumes images; for a map, a ConcatRows of the base
    # task's images and the windows' pixels (a read-only memory map: a scene's pixels need not fit in memory)
    images: np.ndarray | ConcatRows | None = None


def handed(
    task: Task,
    cache: Cache,
    backbone: str,
    image_size: int,
    consumes: str,
    progress: Progress = SILENT,
    device: torch.device = CPU,
    handles: RowHandles | None = None,
) -> Handed:
    """What the harness hands a method for `task`: arrays computed (or read from `cache`) here, where the image
    files are, and put in handle order; nothing of the table comes along."""
    if consumes not in CONSUMES:
        raise UserError(f"a method's `consumes` must be one of {', '.join(CONSUMES)}, got {consumes!r}")
    handles = handles if handles is not None else RowHandles.of_table(task.table)
    rows = RowFiles.of(task.table)
    base = np.asarray(task.base, np.int64)
    # Caches derived from these arrays key on what they hold, in handle order; what trains on the base pool
    # alone sees the same images in the same base-pool order as before handles, so it keeps its key.
    keys = {
        "features": cache_key("by-handle", HANDLES_VERSION, features_key(rows, backbone, image_size, device)),
        "images": cache_key("by-handle", HANDLES_VERSION, images_key(rows, image_size)),
        "base_images": images_key(rows, image_size),
    }
    features = images = None
    if consumes in ("features", "both"):
        features = handles.in_handle_order(frozen_features(rows, cache, backbone, image_size, progress, device))
    if consumes in ("images", "both"):
        images = handles.in_handle_order(image_array(rows, image_size, cache, progress))
    return Handed(
        task_key=task.fingerprint(),
        n_rows=len(task.table),
        base=handles.of_rows(base),
        base_labels=task.table.labels[base],
        base_groups=task.table.groups[base],
        episode_classes=np.unique(task.table.labels[np.asarray(task.target, np.int64)]),
        keys=keys,
        features=features,
        images=images,
    )


@dataclass(eq=False)
class Context:
    """What a method may use besides an episode: the arrays and base pool the harness hands over.

    `Context.of(handed(...), cache, ...)` takes them as the harness hands them (benchmark/runner.method_context,
    and a sandboxed method, benchmark/sandbox.py). `Context(task, cache, ...)` computes them from a task it does
    not keep (`consumes`: which arrays the method reads) with handles equal to row numbers, for tools and tests
    that address rows by row number; the harness never hands a method such a context."""

    task: InitVar[Task | None]
    cache: Cache
    backbone: str = DEFAULTS.backbone
    image_size: int = DEFAULTS.image_size
    seed: int = DEFAULTS.seed
    progress: Progress = field(default=SILENT)
    # Where the method's network passes run (methods/devices.py): its modules and the tensors they read go
    # there once; scores come back to the CPU as numpy. Not label data: the harness sets it from --device.
    device: torch.device = CPU
    consumes: InitVar[str] = "both"
    given: InitVar[Handed | None] = None
    task_key: str = field(init=False)
    n_rows: int = field(init=False)
    _handed: Handed = field(init=False, repr=False)

    def __post_init__(self, task: Task | None, consumes: str, given: Handed | None) -> None:
        self.cache = copy.copy(self.cache)  # a method that reconfigures its cache reconfigures only its own
        if given is None:
            given = handed(
                task,
                self.cache,
                self.backbone,
                self.image_size,
                consumes,
                self.progress,
                self.device,
                RowHandles.identity(len(task.table)),
            )
        self._handed = Handed(
            **{
                name: _owned(value) if isinstance(value, (np.ndarray, ConcatRows)) else value
                for name, value in vars(given).items()
            }
        )
        self.task_key, self.n_rows = given.task_key, given.n_rows

    @classmethod
    def of(cls, given: Handed, cache: Cache, **settings) -> Context:
        return cls(None, cache, given=given, **settings)

    def fresh(self) -> Context:
        """Another context with what this one was handed: each method its own sealed view."""
        return Context.of(
            self._handed,
            self.cache,
            backbone=self.backbone,
            image_size=self.image_size,
            seed=self.seed,
            progress=self.progress,
            device=self.device,
        )

    def _array(self, name: str) -> np.ndarray:
        value = getattr(self._handed, name)
        if value is None:
            raise RuntimeError(
                f"this method asked for ctx.{name}() but its class does not declare it reads them; set "
                f'`consumes = "{name}"` (or "both") on the method class'
            )
        return value.copy()

    def features(self) -> np.ndarray:
        """(n_rows, D) frozen ImageNet features of every row, in handle order (a fresh array on every call)."""
        return self._array("features")

    def features_key(self) -> str:
        """Identifies what ctx.features() returns, for the keys of caches derived from features."""
        return self._handed.keys["features"]

    def images(self) -> np.ndarray | ConcatRows:
        """(n_rows, 3, S, S) uint8 of every row, in handle order (a fresh array on every call; in `bench map`, an
        array-like of read-only parts, indexed as an array: a scene's windows are read from disk as indexed)."""
        return self._array("images")

    def images_key(self) -> str:
        """Identifies what ctx.images() returns: methods put it in the keys of caches derived from images."""
        return self._handed.keys["images"]

    def base_images_key(self) -> str:
        """Identifies the base pool's images in base_pool() order; what is trained on the base pool alone (SDFT's
        step 1) keys on it, so that a context with more images (a scene's windows in `bench map`) shares those
        caches."""
        return self._handed.keys["base_images"]

    def base_pool(self) -> tuple[np.ndarray, np.ndarray]:
        """(handles, labels) of the base pool: copies of the method's own. Labels are the table's class ids. The
        base pool keeps the task's own order, which says nothing its labels and groups do not."""
        return self._handed.base.copy(), self._handed.base_labels.copy()

    def base_groups(self) -> np.ndarray:
        """The source scene of each base-pool row, in base_pool() order (a copy)."""
        return self._handed.base_groups.copy()

    def episode_classes(self) -> np.ndarray:
        """The class ids (as base_pool() labels them) that this run's episodes draw from: the task's class list,
        which a user knows before labelling anything; no row's label."""
        return self._handed.episode_classes.copy()

    def base_episodes(self) -> PoolIndex:
        """The base pool indexed for `tasks.episodes.sample_episode`: scene-disjoint N-way K-shot Q-query
        episodes over base handles, as the harness draws target episodes."""
        labels = np.full(self.n_rows, -1, np.int64)
        groups = np.full(self.n_rows, "", dtype=object)
        base = self._handed.base
        labels[base], groups[base] = self._handed.base_labels, self._handed.base_groups
        return PoolIndex(labels, groups, base.copy())


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


class FewShotMethod:
    """Subclass, register with @register_method, implement fit and predict."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    consumes: ClassVar[str] = "images"  # "features": frozen features from the cache; "images": pixels
    # Bump when the method's numbers change for the same options and episodes: results rows key on it.
    version: ClassVar[int] = 1
    # True: `fit` also gets `classes=`, the episode's class ids in episode-label order (as base_pool() labels
    # them): what the user who labelled the support knows. Which query is which class stays hidden.
    takes_classes: ClassVar[bool] = False
    # True: `predict` uses the features of the whole query it is given (its own episode's, never their labels
    # nor another episode's rows), so the harness hands it an episode's whole query at once (a fixed-K test
    # pool, a scene's windows) and every row and table marks its results as transductive.
    transductive: ClassVar[bool] = False

    def prepare(self, ctx: Context) -> None:
        """Once per task and run, before any episode; may pre-train on ctx.base_pool() (and cache)."""

    def config(self) -> dict:
        """Constructor options with their defaults filled in, as the registry converted them: they determine
        results and key result rows."""
        return recorded_config(self)

    def fit(self, support_idx: np.ndarray, support_y: np.ndarray, n_way: int, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def predict(self, query_idx: np.ndarray) -> np.ndarray:
        """(n_query, n_way) scores; the harness takes the argmax."""
        raise NotImplementedError


class FeatureMethod(FewShotMethod):
    """A method over frozen backbone features: implement fit_features / predict_features."""

    consumes = "features"
    device = CPU  # where self.features are; prepare sets ctx.device

    def prepare(self, ctx: Context) -> None:
        super().prepare(ctx)
        self.device = ctx.device
        self.features = torch.from_numpy(ctx.features()).to(ctx.device)  # all rows, sent once

    def fit(self, support_idx, support_y, n_way, rng):
        self.fit_features(
            self.features[torch.as_tensor(support_idx, device=self.device)],
            torch.as_tensor(support_y, device=self.device),
            n_way,
            rng,
        )

    def predict(self, query_idx):
        with torch.inference_mode():
            return to_numpy(
                self.predict_features(self.features[torch.as_tensor(query_idx, device=self.device)]).float()
            )

    def fit_features(self, x: torch.Tensor, y: torch.Tensor, n_way: int, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def predict_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


_PER_EPISODE = ("fit", "predict", "fit_features", "predict_features")


class BatchedMethod(FeatureMethod):
    """A frozen-feature method that also answers many episodes in one call (benchmark/fastpath.py).

    `predict_batch(support_idx (E, n), support_y (E, n), query_idx (E, m), n_way) -> (E, m, n_way)` takes
    rows of `self.features` by index and must give, for each episode, the scores that fit + predict give for
    it alone (the harness uses one or the other). A subclass that changes how one episode is answered must
    say how many are: defining fit/predict (or their feature versions) without predict_batch is an error."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "predict_batch" not in vars(cls) and any(name in vars(cls) for name in _PER_EPISODE):
            raise TypeError(
                f"{cls.__name__} changes how one episode is answered but not predict_batch; define "
                f"predict_batch to match, or derive from FeatureMethod instead of BatchedMethod"
            )

    def batch_row_floats(self) -> int:
        """Floats per row that predict_batch reads (sizes the chunks of episodes)."""
        return int(self.features.shape[1])

    def predict_batch(
        self, support_idx: torch.Tensor, support_y: torch.Tensor, query_idx: torch.Tensor, n_way: int
    ) -> torch.Tensor:
        raise NotImplementedError
