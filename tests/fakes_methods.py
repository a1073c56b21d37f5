"""A tiny generated few-shot task for method tests: class = colour + stripe pattern, group = scene shading.

Frozen ImageNet features separate the classes easily, so every sensible method beats chance in milliseconds
per episode. Groups ("scenes") are split between base and target pools, and each class has several groups
in each, so scene-disjoint episodes can be drawn from both pools.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from methods.base import Context, FewShotMethod
from methods.cache import Cache
from methods.registry import register_method
from tasks.datasets import table_from_rows
from tasks.registry import Task

COLOURS = [(210, 50, 50), (50, 200, 60), (60, 70, 220), (220, 210, 60), (200, 60, 210), (50, 200, 210)]


def class_image(label: int, group: int, i: int, size: int) -> np.ndarray:
    """(size, size, 3) uint8: a class colour with class-specific stripes, a group shading, pixel noise."""
    rng = np.random.default_rng([label, group, i, size])
    img = np.zeros((size, size, 3), np.float64) + COLOURS[label % len(COLOURS)]
    period = 2 + label % 4
    if label % 2:
        img[::period, :, :] = 255  # horizontal stripes
    else:
        img[:, ::period, :] = 20  # dark vertical stripes
    img = img * (0.8 + 0.1 * (group % 3)) + rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_task(
    root: Path, n_classes: int = 4, groups_per_class: int = 6, per_group: int = 4, size: int = 32, base_groups: int = 3
) -> Task:
    """PNG files under root; groups 0..base_groups-1 of every class form the base pool, the rest the target."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths, labels, groups, pool = [], [], [], []
    for c in range(n_classes):
        for g in range(groups_per_class):
            for i in range(per_group):
                path = root / f"c{c}_g{g}_{i}.png"
                Image.fromarray(class_image(c, g, i, size)).save(path)
                paths.append(path)
                labels.append(c)
                groups.append(f"scene{c}-{g}")
                pool.append(g < base_groups)
    table = table_from_rows("tiny-methods", paths, labels, groups, [f"class{c}" for c in range(n_classes)])
    pool = np.asarray(pool)
    return Task("tiny-methods", "generated colour/stripe task", table, np.flatnonzero(pool), np.flatnonzero(~pool))


def make_context(task: Task, cache_dir: Path, image_size: int = 32, seed: int = 0, **kw) -> Context:
    return Context(task, Cache(cache_dir), image_size=image_size, seed=seed, **kw)


class Instant(FewShotMethod):
    """Answers from the query's row handles: deterministic, instant, no features (a stand-in plugin)."""

    def fit(self, support_idx, support_y, n_way, rng):
        self.n_way = n_way

    def predict(self, query_idx):
        return np.eye(self.n_way)[np.asarray(query_idx) % self.n_way]


def instant_method(name: str) -> type:
    """A class of its own (its attributes may be patched by a test), registered under `name`. Its module is the
    caller's, which registers it on import: a fresh process that answers episodes again imports that module to
    create the method (benchmark/sandbox.modules_for)."""
    caller = sys._getframe(1).f_globals["__name__"]
    return register_method(name)(type(f"Instant[{name}]", (Instant,), {"__module__": caller}))
