"""What a method sees of a scene, and what only the harness holds.

`SceneWindows` is the harness's side: the scene, its window grid, the secret order that turns grid positions
into window handles (`window_indices`), the windows' frozen features (cached per scene, grid, size and
backbone) and their pixels. The method gets a plain `methods.base.Context` (`SceneWindows.handed`): the base
task's rows, for pre-training exactly as in `bench run`, followed by the scene's windows in handle order (window
handle n_base + h is the window at grid position `window_order()[h]`), as nothing but numbers: features as one
array, images as the base task's decoded images followed by the windows' pixels, written once in handle order
to a cache file and handed as a read-only memory map (methods/concat.py), so a scene's pixels never all sit in
memory. Neighbouring windows share their landform: a method that could tell where a window lies could label
the scene by proximity to the labelled windows without looking at a pixel, so nothing it is handed says so.

`WindowImages` crops and resizes windows on demand from the scene (in memory, or read window by window from a
raster): what feature extraction and the pixel file read.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from benchmark.mapping.scene import RasterScene, Scene
from methods.backbones import backbone_name, weights_digest
from methods.base import Handed
from methods.cache import Cache, cache_key
from methods.concat import ConcatRows
from methods.devices import CPU, device_key
from methods.features import NUMERICS_VERSION, PREPROCESSING_VERSION, feature_extractor, run_model
from methods.progress import SILENT, Progress
from tasks.windows import WindowGrid

MAP_VERSION = 1
PIXEL_BATCH = 256  # windows cropped and written to the pixel file at a time (12 MB at 128 px)


class WindowImages:
    """Array-like (n, 3, size, size) uint8 over windows of a scene, cropped and resized on demand.

    Supports len(), .shape and indexing by an int, a slice or an integer array (what run_model uses), so a whole
    scene never sits in memory as pixels. Only the harness holds one: its coordinates say where windows lie."""

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


@dataclass(eq=False)
class SceneWindows:
    """The harness's side of a map: the scene's windows, which window each handle is, and what a method is
    handed of them. Never handed to a method.

    Window handles follow the base task's n_base rows: window handle n_base + h is the window at grid position
    `window_order()[h]`, an order drawn from a digest of the scene's content and the grid, so that a handle says
    nothing about where its window lies."""

    scene: Scene | RasterScene
    grid: WindowGrid
    n_base: int  # rows of the base task, before the windows
    cache: Cache  # the harness's cache: the windows' features and pixels
    backbone: str
    image_size: int
    device: torch.device = CPU
    progress: Progress = field(default=SILENT)

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

    def window_images(self, order: np.ndarray | None = None) -> WindowImages:
        """The windows' pixels at grid positions `order` (default: all, in grid order), cropped on demand."""
        x0, y0 = (np.asarray(a) for a in self.grid.origins())
        if order is not None:
            x0, y0 = x0[order], y0[order]
        return WindowImages(self.scene, x0, y0, self.grid.window, self.image_size)

    def _scene_key(self) -> list:
        return [MAP_VERSION, self.scene.fingerprint(), self.grid.digest(), self.image_size, PREPROCESSING_VERSION]

    def window_features(self) -> np.ndarray:
        """(n_windows, D) frozen ImageNet features of the grid's windows in grid order, cached per scene, grid,
        size and backbone."""
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

        return self.cache.array("map-features", key, compute)

    def handle_images(self) -> np.ndarray:
        """(n_windows, 3, S, S) uint8 pixels of the windows in handle order: a read-only memory map of a cache
        file written once per scene, grid, size, preprocessing and order (a temporary file where the cache
        cannot store it). It holds pixels and nothing else."""
        order = self.window_order()
        key = cache_key("map-pixels", *self._scene_key(), hashlib.sha256(order.tobytes()).hexdigest())
        windows = self.window_images(order)

        def parts():
            with self.progress.bar(f"cropping {len(windows)} windows", len(windows)) as advance:
                for start in range(0, len(windows), PIXEL_BATCH):
                    part = windows[start : start + PIXEL_BATCH]
                    advance(len(part))
                    yield part

        return self.cache.mapped_array("map-pixels", key, windows.shape, np.uint8, parts)

    def handed(self, base: Handed) -> Handed:
        """What a method prepares on: `base` (the base task's rows as handed for `bench run`) followed by the
        windows in handle order, with only the arrays `base` holds (those its method consumes)."""
        if base.n_rows != self.n_base:
            raise ValueError(f"the windows follow {self.n_base} base rows, but {base.n_rows} were handed")
        keys = {
            **base.keys,
            "features": cache_key("map-features", base.keys["features"], *self._scene_key(), "by-handle"),
            "images": cache_key("map-images", base.keys["images"], *self._scene_key(), "by-handle"),
        }
        features = images = None
        if base.features is not None:
            features = np.concatenate([base.features, self.window_features()[self.window_order()]])
        if base.images is not None:
            images = ConcatRows([base.images, self.handle_images()])
        return dataclasses.replace(base, n_rows=base.n_rows + self.grid.n, keys=keys, features=features, images=images)
