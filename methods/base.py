"""A few-shot method: prepare once per task, then per episode fit on the support set and predict the query.

The harness hands a method a sealed `Context` in `prepare`: the data of every row (decoded images, frozen
features), the base pool (its rows, labels and groups, and scene-disjoint episodes drawn from it), the cache,
backbone, image size, seed and progress. The context holds no task, no table and nothing else from which
the labels of target rows can be reached; every array it returns is the method's own copy. Per episode
`fit` gets copies of the support's rows and labels and `predict` a copy of the query's rows (never its
labels), and the harness scores the returned scores itself, so no method can score itself or change what
another method sees. docs/adding-a-method.md says what is and is not in scope of this boundary.
"""
from __future__ import annotations

import copy
from dataclasses import InitVar, dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from methods.backbones import DEFAULT_BACKBONE
from methods.cache import Cache
from methods.devices import CPU, to_numpy
from methods.features import DEFAULT_IMAGE_SIZE, features_key, frozen_features, image_array, images_key
from methods.progress import SILENT, Progress
from methods.registry import recorded_config
from tasks.datasets import ImageTable
from tasks.episodes import PoolIndex
from tasks.registry import Task


@dataclass(frozen=True, eq=False)
class RowFiles(ImageTable):
    """The image files of a task's rows, in row order, without labels, groups or splits: what decoding images
    and extracting features need. It answers `fingerprint()` and `identity()` with the task table's own, so
    that images and features share their cache entries with the table's."""

    table_fingerprint: str = ""
    table_identity: str = ""

    @classmethod
    def of(cls, table: ImageTable) -> "RowFiles":
        paths = np.array(table.paths, dtype=object)  # a copy: nothing leads back to the table's frame
        frame = pd.DataFrame({"path": paths, "label": np.full(len(paths), -1, np.int64), "group": "", "split": ""})
        return cls(name=table.name, frame=frame, class_names=(), table_fingerprint=table.fingerprint(),
                   table_identity=table.identity())

    def fingerprint(self, cache_dir=None) -> str:
        return self.table_fingerprint

    def identity(self) -> str:
        return self.table_identity


def _owned(array: np.ndarray) -> np.ndarray:
    """A read-only copy that shares memory with nothing (its `.base` leads nowhere)."""
    out = np.array(array, copy=True)
    out.flags.writeable = False
    return out


@dataclass(eq=False)
class Context:
    """What a method may use besides an episode, built by the harness from a task that it does not keep.

    `Context(task, cache, ...)` takes the task only to copy out the base pool and the label-free row files."""

    task: InitVar[Task]
    cache: Cache
    backbone: str = DEFAULT_BACKBONE
    image_size: int = DEFAULT_IMAGE_SIZE
    seed: int = 0
    progress: Progress = field(default=SILENT)
    # Where the method's network passes run (methods/devices.py): its modules and the tensors they read go
    # there once; scores come back to the CPU as numpy. Not label data: the harness sets it from --device.
    device: torch.device = CPU
    task_name: str = field(init=False)
    task_key: str = field(init=False)  # identifies the task (rows, labels and pools) for cache keys
    n_rows: int = field(init=False)
    _rows: RowFiles = field(init=False, repr=False)
    _base: np.ndarray = field(init=False, repr=False)
    _base_labels: np.ndarray = field(init=False, repr=False)
    _base_groups: np.ndarray = field(init=False, repr=False)
    _episode_classes: np.ndarray = field(init=False, repr=False)

    def __post_init__(self, task: Task) -> None:
        self.cache = copy.copy(self.cache)  # a method that reconfigures its cache reconfigures only its own
        self.task_name, self.task_key, self.n_rows = task.name, task.fingerprint(), len(task.table)
        self._rows = RowFiles.of(task.table)
        self._base = _owned(np.asarray(task.base, np.int64))
        self._base_labels = _owned(task.table.labels[self._base])
        self._base_groups = _owned(task.table.groups[self._base])
        self._episode_classes = _owned(np.unique(task.table.labels[np.asarray(task.target, np.int64)]))

    def features(self) -> np.ndarray:
        """(n_rows, D) frozen ImageNet features of every row (cached; a fresh array on every call)."""
        return frozen_features(self._rows, self.cache, self.backbone, self.image_size, self.progress, self.device)

    def features_key(self) -> str:
        """Identifies what ctx.features() returns, for the keys of caches derived from features."""
        return features_key(self._rows, self.backbone, self.image_size, self.device)

    def images(self) -> np.ndarray:
        """(n_rows, 3, S, S) uint8 of every row (cached; a fresh array on every call)."""
        return image_array(self._rows, self.image_size, self.cache, self.progress)

    def images_key(self) -> str:
        """Identifies what ctx.images() returns: methods put it in the keys of caches derived from images."""
        return images_key(self._rows, self.image_size)

    def base_images_key(self) -> str:
        """Identifies the base pool's images; what is trained on the base pool alone (SDFT's step 1) keys on
        it, so that a context with more images (a scene's windows in `bench map`) shares those caches."""
        return self.images_key()

    def base_pool(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, labels) of the base pool: copies of the method's own. Labels are the table's class ids."""
        return self._base.copy(), self._base_labels.copy()

    def base_groups(self) -> np.ndarray:
        """The source scene of each base-pool row, in base_pool() order (a copy)."""
        return self._base_groups.copy()

    def episode_classes(self) -> np.ndarray:
        """The class ids (as base_pool() labels them) that this run's episodes draw from: the task's class list,
        which a user knows before labelling anything; no row's label."""
        return self._episode_classes.copy()

    def base_episodes(self) -> PoolIndex:
        """The base pool indexed for `tasks.episodes.sample_episode`: scene-disjoint N-way K-shot Q-query
        episodes over base rows, as the harness draws target episodes."""
        labels = np.full(self.n_rows, -1, np.int64)
        groups = np.full(self.n_rows, "", dtype=object)
        labels[self._base], groups[self._base] = self._base_labels, self._base_groups
        return PoolIndex(labels, groups, self._base.copy())


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
        self.fit_features(self.features[torch.as_tensor(support_idx, device=self.device)],
                          torch.as_tensor(support_y, device=self.device), n_way, rng)

    def predict(self, query_idx):
        with torch.inference_mode():
            return to_numpy(self.predict_features(self.features[torch.as_tensor(query_idx, device=self.device)]).float())

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
            raise TypeError(f"{cls.__name__} changes how one episode is answered but not predict_batch; define "
                            f"predict_batch to match, or derive from FeatureMethod instead of BatchedMethod")

    def batch_row_floats(self) -> int:
        """Floats per row that predict_batch reads (sizes the chunks of episodes)."""
        return int(self.features.shape[1])

    def predict_batch(self, support_idx: torch.Tensor, support_y: torch.Tensor, query_idx: torch.Tensor,
                      n_way: int) -> torch.Tensor:
        raise NotImplementedError
