"""A few-shot method: prepare once per task, then per episode fit on the support set and predict the query.

The harness gives a method only what it may use: the task's base pool (labels included) in `prepare`, the
support set's indices and labels in `fit`, and the query's indices (never its labels) in `predict`. It
scores the returned logits itself, so no method can score itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from methods.backbones import DEFAULT_BACKBONE
from methods.cache import Cache
from methods.features import DEFAULT_IMAGE_SIZE, features_key, frozen_features, image_array, images_key
from methods.progress import SILENT, Progress
from tasks.registry import Task


@dataclass
class Context:
    """What a method may use besides an episode: the task (its base pool), caches, backbone, seed."""

    task: Task
    cache: Cache
    backbone: str = DEFAULT_BACKBONE
    image_size: int = DEFAULT_IMAGE_SIZE
    seed: int = 0
    progress: Progress = field(default=SILENT)

    def features(self) -> np.ndarray:
        """Frozen ImageNet features for every image of the task's table (cached)."""
        return frozen_features(self.task.table, self.cache, self.backbone, self.image_size, self.progress)

    def features_key(self) -> str:
        """Identifies what ctx.features() returns, for the keys of caches derived from features."""
        return features_key(self.task.table, self.backbone, self.image_size)

    def images(self) -> np.ndarray:
        """(n_images, 3, S, S) uint8 for every image of the table (cached, memory only when asked)."""
        return image_array(self.task.table, self.image_size, self.cache, self.progress)

    def images_key(self) -> str:
        """Identifies what ctx.images() returns: methods put it in the keys of caches derived from images."""
        return images_key(self.task.table, self.image_size)

    def base_images_key(self) -> str:
        """Identifies the base pool's images; what is trained on the base pool alone (SDFT's step 1) keys on
        it, so that a context with more images (a scene's windows in `bench map`) shares those caches."""
        return self.images_key()

    def base_pool(self) -> tuple[np.ndarray, np.ndarray]:
        """(table indices, labels) of the base pool."""
        return self.task.base, self.task.table.labels[self.task.base]


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


class FewShotMethod:
    """Subclass, register with @register_method, implement fit and predict."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    consumes: ClassVar[str] = "images"  # "features": frozen features from the cache; "images": pixels

    def prepare(self, ctx: Context) -> None:
        """Once per task and run, before any episode; may pre-train on ctx.base_pool() (and cache)."""
        self.ctx = ctx

    def config(self) -> dict:
        """Constructor options with their defaults filled in: they determine results and key result rows."""
        import inspect

        options = {name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()
                   if name != "self" and p.default is not inspect.Parameter.empty}
        for name, value in getattr(self, "_options", {}).items():
            default = options.get(name)
            # 10 and 10.0 are one setting: give a value its default's type, so results share one key
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            options[name] = value
        return options

    def fit(self, support_idx: np.ndarray, support_y: np.ndarray, n_way: int, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def predict(self, query_idx: np.ndarray) -> np.ndarray:
        """(n_query, n_way) scores; the harness takes the argmax."""
        raise NotImplementedError


class FeatureMethod(FewShotMethod):
    """A method over frozen backbone features: implement fit_features / predict_features."""

    consumes = "features"

    def prepare(self, ctx: Context) -> None:
        super().prepare(ctx)
        self.features = torch.from_numpy(ctx.features())

    def fit(self, support_idx, support_y, n_way, rng):
        self.fit_features(self.features[support_idx], torch.as_tensor(support_y), n_way, rng)

    def predict(self, query_idx):
        with torch.inference_mode():
            return self.predict_features(self.features[query_idx]).float().numpy()

    def fit_features(self, x: torch.Tensor, y: torch.Tensor, n_way: int, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def predict_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
