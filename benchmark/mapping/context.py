"""What a method sees of a scene: `MapContext`, a `Context` whose task is the base task (methods pre-train on
its base pool exactly as in `bench run`) but whose images()/features() are the base table's arrays followed by
the scene's windows (window i has index len(table) + i).

Window pixels are never held all at once: `WindowImages` crops and resizes on demand from the scene (in memory
or read window by window from a raster), so memory is O(windows x feature size), not O(windows x pixels).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from benchmark.mapping.scene import RasterScene, Scene
from methods.backbones import backbone_name, weights_digest
from methods.base import Context
from methods.cache import Cache, cache_key
from methods.devices import device_key
from methods.features import NUMERICS_VERSION, PREPROCESSING_VERSION, feature_extractor, run_model
from tasks.windows import WindowGrid

MAP_VERSION = 1


class WindowImages:
    """Array-like (n, 3, size, size) uint8 over windows of a scene, cropped and resized on demand.

    Supports len(), .shape and indexing by an int, a slice or an integer array (what methods and run_model
    use), so a whole scene never sits in memory as pixels."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, scene: Scene | RasterScene, x0: np.ndarray, y0: np.ndarray, window: int, size: int):
        self.scene, self.x0, self.y0, self.window, self.size = scene, np.asarray(x0), np.asarray(y0), window, size

    def __len__(self) -> int:
        return len(self.x0)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), 3, self.size, self.size)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.scene.window(int(self.x0[index]), int(self.y0[index]), self.window, self.size)
        positions = np.arange(len(self))[index]
        out = np.empty((len(positions), 3, self.size, self.size), np.uint8)
        for k, i in enumerate(positions):
            out[k] = self.scene.window(int(self.x0[i]), int(self.y0[i]), self.window, self.size)
        return out


class ConcatImages:
    """Array-like concatenation of the base table's image array and the scene's WindowImages."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, base: np.ndarray, windows: WindowImages):
        self.base, self.windows = base, windows

    def __len__(self) -> int:
        return len(self.base) + len(self.windows)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self),) + tuple(self.windows.shape[1:])

    def __getitem__(self, index) -> np.ndarray:
        n_base = len(self.base)
        if isinstance(index, (int, np.integer)):
            index = int(index) + (len(self) if index < 0 else 0)
            return self.base[index] if index < n_base else self.windows[index - n_base]
        positions = np.arange(len(self))[index]
        out = np.empty((len(positions),) + self.shape[1:], np.uint8)
        in_base = positions < n_base
        if in_base.any():
            out[in_base] = self.base[positions[in_base]]
        if (~in_base).any():
            out[~in_base] = self.windows[positions[~in_base] - n_base]
        return out


@dataclass
class MapContext(Context):
    """Context for mapping: the base task for pre-training, plus the scene's windows after the base table.

    Windows are addressed by handles too: window handle n_rows + h is the window at position `window_order()[h]`
    of the grid, an order drawn from a digest of the scene's content and the grid, which no method is handed, so
    that a handle says nothing about where its window lies (neighbouring windows share their landform)."""

    scene: Scene | RasterScene | None = None
    grid: WindowGrid | None = None
    window_cache: Cache | None = None  # where window features are cached (default: the context's cache)

    @property
    def n_base(self) -> int:
        return self.n_rows

    def window_order(self) -> np.ndarray:
        """The grid position of each window handle."""
        order = self.__dict__.get("_window_order")
        if order is None:
            seed = f"{self.scene.fingerprint()}:{self.grid.digest()}"
            digests = [hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(self.grid.n)]
            order = self.__dict__["_window_order"] = np.array(
                sorted(range(self.grid.n), key=digests.__getitem__), dtype=np.int64
            )
        return order

    def window_indices(self, windows=None) -> np.ndarray:
        """The handles of grid positions `windows` (default: all, in grid order)."""
        windows = np.arange(self.grid.n) if windows is None else np.asarray(windows)
        # the inverse of window_order, kept: the harness asks for every chunk of windows it classifies
        handle_of = self.__dict__.get("_handle_of")
        if handle_of is None:
            handle_of = self.__dict__["_handle_of"] = np.empty(self.grid.n, np.int64)
            handle_of[self.window_order()] = np.arange(self.grid.n)
        return self.n_base + handle_of[windows]

    def window_images(self) -> WindowImages:
        """The windows' pixels in grid order."""
        x0, y0 = self.grid.origins()
        return WindowImages(self.scene, x0, y0, self.grid.window, self.image_size)

    def _scene_key(self) -> list:
        return [MAP_VERSION, self.scene.fingerprint(), self.grid.digest(), self.image_size, PREPROCESSING_VERSION]

    def window_features(self) -> np.ndarray:
        """(n_windows, D) frozen ImageNet features of the grid's windows in grid order, cached per scene, grid and
        size."""
        key = cache_key(
            "map-features",
            *self._scene_key(),
            NUMERICS_VERSION,
            backbone_name(self.backbone),
            weights_digest(self.backbone),
            *device_key(self.device),
        )

        def compute():
            return run_model(
                feature_extractor(self.backbone),
                self.window_images(),
                progress=self.progress,
                description=f"{backbone_name(self.backbone)} features of {self.grid.n} windows",
                device=self.device,
            )

        return (self.window_cache or self.cache).array("map-features", key, compute)

    def features(self) -> np.ndarray:
        return np.concatenate([super().features(), self.window_features()[self.window_order()]])

    def features_key(self) -> str:
        return cache_key("map-features", super().features_key(), *self._scene_key(), "by-handle")

    def images(self) -> ConcatImages:
        x0, y0 = self.grid.origins()
        order = self.window_order()
        windows = WindowImages(
            self.scene, np.asarray(x0)[order], np.asarray(y0)[order], self.grid.window, self.image_size
        )
        return ConcatImages(super().images(), windows)

    def images_key(self) -> str:
        return cache_key("map-images", super().images_key(), *self._scene_key(), "by-handle")
