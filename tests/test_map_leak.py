"""Plugins that try to map a scene from where its windows lie instead of what they show (benchmark/mapping/context.py).

Overlapping and neighbouring windows share their landform, so a method that knew each window handle's position
in the scene could label every query window with the label of the nearest labelled window and top the map
leaderboard without learning anything from the pixels. Two plugins try, as a plugin author who read our code
would:
- `test-map-seeker` walks everything reachable from what it is handed (the context, what each of its public
  methods returns, the handles and labels of fit and predict) and records every scene, window grid, object
  with window coordinates (`x0`/`y0`) or object offering the harness's window methods (`scene`, `grid`,
  `window_order`, `window_indices`, `window_images`, `window_features`): none is reachable;
- `test-map-neighbour` answers each query window with the label of the nearest labelled window by position,
  wherever it finds positions; on a scene of pure noise whose halves are the classes, it finds none and can
  only answer its constant fallback.
Walking the garbage collector or interpreter frames, and re-reading the scene from disk, are out of scope for
in-process plugins (docs/adding-a-method.md), as for episodes: `--isolate` stops them (tests/test_map_isolate.py).
"""

from __future__ import annotations

import functools
import types

import numpy as np
import torch
from PIL import Image

from benchmark.mapping.map import map_scene
from benchmark.mapping.points import read_points, write_points
from benchmark.mapping.scene import RasterScene, Scene, load_scene
from benchmark.runner import MethodSpec
from common.settings import Settings
from methods.base import FewShotMethod
from methods.cache import Cache
from methods.registry import register_method
from tasks.windows import WindowGrid
from tests.fakes_methods import make_task

HARNESS_NAMES = ("scene", "grid", "window_order", "window_indices", "window_images", "window_features")
FOUND: list[str] = []  # what the seeker reached that would tell where a window lies
WALKED: list[int] = []  # how many objects each walk reached, and the row counts of the arrays it was handed
NEIGHBOUR: list[bool] = []  # per prepare of the neighbour plugin: whether it found window positions


def _children(obj):
    """Objects reachable from obj by attributes, slots, items, closures and bound methods."""
    if isinstance(obj, (str, bytes, int, float, complex, bool, type(None), type, types.ModuleType, torch.Tensor)):
        return
    if isinstance(obj, np.ndarray):
        if obj.base is not None:
            yield obj.base
        return
    if isinstance(obj, dict):
        yield from list(obj.keys()) + list(obj.values())
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        yield from obj
        return
    if isinstance(obj, functools.partial):
        yield from (obj.func, obj.args, obj.keywords)
    if isinstance(obj, types.FunctionType):
        for cell in obj.__closure__ or ():
            try:
                yield cell.cell_contents
            except ValueError:
                pass
    if isinstance(obj, types.MethodType):
        yield from (obj.__self__, obj.__func__)
    try:
        yield from list(vars(obj).values())
    except TypeError:
        pass
    for cls in type(obj).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            if isinstance(slot, str) and hasattr(obj, slot):
                yield getattr(obj, slot)


def walk(roots):
    """Every object reachable from roots (an object or a dict of them)."""
    seen, keep, stack = set(), [], list(roots.values()) if isinstance(roots, dict) else [roots]
    while stack and len(seen) < 200_000:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        keep.append(obj)  # computed children must not be freed and their ids reused
        yield obj
        try:
            stack.extend(_children(obj))
        except Exception:  # an object that refuses introspection is a dead end
            continue


def _attr(obj, name: str):
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def revealing(obj) -> str | None:
    """What about obj would tell a window's position, or None."""
    if isinstance(obj, (Scene, RasterScene, WindowGrid)):
        return type(obj).__name__
    if isinstance(obj, (type, types.ModuleType, np.ndarray, torch.Tensor)):
        return None
    names = [name for name in HARNESS_NAMES if _attr(obj, name) is not None]
    if _attr(obj, "x0") is not None and _attr(obj, "y0") is not None:
        names.append("x0/y0")
    return f"{type(obj).__name__} with {', '.join(names)}" if names else None


def api_results(ctx) -> dict:
    """What each zero-argument public method of the context returns."""
    out = {}
    for name in dir(ctx):
        attr = _attr(ctx, name)
        if not name.startswith("_") and callable(attr):
            try:
                out[name] = attr()
            except TypeError:  # takes arguments
                pass
    return out


def seek(roots) -> None:
    count = 0
    for obj in walk(roots):
        count += 1
        found = revealing(obj)
        if found:
            FOUND.append(found)
    WALKED.append(count)


class Constant(FewShotMethod):
    consumes = "both"

    def fit(self, support_idx, support_y, n_way, rng):
        self.n_way = n_way

    def constant(self, n: int) -> np.ndarray:
        scores = np.zeros((n, self.n_way), np.float32)
        scores[:, 0] = 1
        return scores


@register_method("test-map-seeker")
class Seeker(Constant):
    def prepare(self, ctx):
        results = api_results(ctx)
        WALKED.extend(len(results[name]) for name in ("images", "features"))
        seek({"ctx": ctx, "self": self, **results})

    def fit(self, support_idx, support_y, n_way, rng):
        super().fit(support_idx, support_y, n_way, rng)
        seek({"self": self, "support_idx": support_idx, "support_y": support_y, "rng": rng})

    def predict(self, query_idx):
        seek({"self": self, "query_idx": query_idx})
        return self.constant(len(query_idx))


def handle_positions(ctx) -> np.ndarray | None:
    """(n_handles, 2) window centre (x, y) by handle (NaN: not a window), from whatever tells it; None if
    nothing does."""
    for obj in walk({"ctx": ctx, **api_results(ctx)}):
        grid, indices = _attr(obj, "grid"), _attr(obj, "window_indices")
        if isinstance(grid, WindowGrid) and callable(indices):  # the handle of every grid position
            handles, centres = indices(), grid.centres()
        elif _attr(_attr(obj, "windows"), "x0") is not None and _attr(obj, "base") is not None:
            windows = obj.windows  # window coordinates in handle order, after the base rows
            handles = len(obj.base) + np.arange(len(windows.x0))
            centres = np.stack([windows.x0, windows.y0], axis=1) + windows.window / 2
        else:
            continue
        positions = np.full((int(np.max(handles)) + 1, 2), np.nan)
        positions[np.asarray(handles)] = centres
        return positions
    return None


@register_method("test-map-neighbour")
class Neighbour(Constant):
    """The label of the nearest labelled window by position; class 0 where it knows no positions."""

    def prepare(self, ctx):
        self.positions = handle_positions(ctx)
        NEIGHBOUR.append(self.positions is not None)

    def fit(self, support_idx, support_y, n_way, rng):
        super().fit(support_idx, support_y, n_way, rng)
        self.support_idx, self.support_y = np.asarray(support_idx), np.asarray(support_y)

    def predict(self, query_idx):
        if self.positions is None:
            return self.constant(len(query_idx))
        at = self.positions[np.asarray(query_idx)]
        distances = np.linalg.norm(at[:, None] - self.positions[self.support_idx][None], axis=-1)
        return np.eye(self.n_way, dtype=np.float32)[self.support_y[distances.argmin(1)]]


def noise_halves(tmp_path):
    """A scene of pure noise whose left and right halves are the two classes, labelled by three windows each:
    nothing in the pixels tells the halves apart, only where the windows lie."""
    pixels = np.random.default_rng(5).integers(0, 256, (96, 128), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "scene.png")
    scene = load_scene(tmp_path / "scene.png")
    grid = WindowGrid(scene.height, scene.width, window=16, stride=16)
    write_points(
        tmp_path / "points.csv",
        [(8, 8), (40, 56), (24, 88), (120, 8), (88, 40), (104, 88)],
        ["left", "left", "left", "right", "right", "right"],
    )
    return scene, grid, read_points(tmp_path / "points.csv", grid)


def map_with(method: str, tmp_path):
    scene, grid, points = noise_halves(tmp_path)
    task = make_task(tmp_path / "base", n_classes=2, groups_per_class=2, per_group=2, base_groups=1)
    result = map_scene(
        MethodSpec.parse(method), task, scene, grid, points, Cache(tmp_path / "cache"), Settings(image_size=16)
    )
    return result, grid, len(task.table)


def test_nothing_handed_to_a_mapping_method_tells_where_a_window_lies(tmp_path):
    FOUND.clear(), WALKED.clear()
    _, grid, n_base = map_with("test-map-seeker", tmp_path)
    assert FOUND == []
    # the walk was not vacuous: the method was handed every row, the windows' pixels and features among them
    assert WALKED[:2] == [n_base + grid.n, n_base + grid.n] and min(WALKED[2:]) > 1 and len(WALKED) >= 5


def test_a_method_cannot_label_windows_by_the_nearest_labelled_window(tmp_path):
    NEIGHBOUR.clear()
    result, grid, _ = map_with("test-map-neighbour", tmp_path)
    truth = np.zeros(grid.shape, np.int64)
    truth[:, grid.xs + grid.window / 2 > 64] = 1  # window centres in the right half: class "right"
    assert NEIGHBOUR == [False]
    assert (result.labels == 0).all()  # its fallback: nothing but the constant answer
    assert (result.labels == truth).mean() < 0.75
