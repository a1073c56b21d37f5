"""Landform mapping of a whole scene from a few labelled windows: sliding windows, context, smoothing, scoring.

A scene is cut into square windows of `window` pixels every `stride` pixels (the last row and column of
windows are aligned to the scene's far edges, so every pixel is covered). Each window is resized to the
method's image size with the same preprocessing as a dataset image (`methods.features.load_image`:
greyscale replicated to RGB, bilinear). The map's pixel grid: every scene pixel belongs to the window whose
centre is nearest along each axis (its *cell*); with stride = window / 2 the interior cells are the windows'
central halves.

Methods see the scene through `MapContext`, a `Context` whose task is the base task (methods pre-train on its
base pool exactly as in `bench run`) but whose images()/features() are the base table's arrays followed by
the scene's windows (window i has index len(table) + i). The labelled samples (POINTS.csv) are the windows
whose cells contain the points; methods fit on them as on an episode's support set and predict every window
in chunks. Window pixels are never held all at once: `WindowImages` crops and resizes on demand, so memory is
O(windows x feature size), not O(windows x pixels).
"""
from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from methods.base import Context
from methods.backbones import weights_digest
from methods.cache import cache_key
from methods.features import NUMERICS_VERSION, PREPROCESSING_VERSION, feature_extractor, run_model
from methods.progress import SILENT, Progress
from tasks.errors import UserError, closest
from tasks.windows import WindowGrid

MAP_VERSION = 1
SMOOTHERS = ("none", "majority", "mrf")
DEFAULT_STRENGTH = {"none": 0.0, "majority": 1.0, "mrf": 1.0}
PROBABILITY_FLOOR = 1e-3  # -log p is capped at 6.9 in the MRF, so one confident window cannot veto its neighbours


# --------------------------------------------------------------------------------------------------- scene


@dataclass(frozen=True, eq=False)
class Scene:
    path: str
    pixels: np.ndarray  # (H, W) for greyscale or (H, W, 3) uint8

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    def fingerprint(self) -> str:
        """Hash of the decoded pixels: the same scene re-encoded keeps its cached features."""
        h = hashlib.sha256(str(self.pixels.shape).encode())
        h.update(np.ascontiguousarray(self.pixels).tobytes())
        return h.hexdigest()[:16]

    def window(self, x0: int, y0: int, window: int, size: int) -> np.ndarray:
        """(3, size, size) uint8, preprocessed exactly as load_image preprocesses an image file."""
        crop = Image.fromarray(self.pixels[y0 : y0 + window, x0 : x0 + window])
        img = ImageOps.fit(crop.convert("RGB"), (size, size), method=Image.Resampling.BILINEAR)
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))

    def preview(self, scale: float) -> np.ndarray:
        """(h, w, 3) uint8 downscaled copy for figures."""
        img = Image.fromarray(self.pixels).convert("RGB")
        if scale < 1:
            img = img.resize((max(1, round(self.width * scale)), max(1, round(self.height * scale))),
                             Image.Resampling.BILINEAR)
        return np.asarray(img)


def load_scene(path: str | Path) -> Scene:
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("L", "RGB"):  # greyscale variants stay greyscale, the rest become RGB
                img = img.convert("L" if img.mode in ("1", "LA", "I", "I;16", "F") else "RGB")
            pixels = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise UserError(f"scene {path} does not exist") from None
    except Image.DecompressionBombError:
        raise UserError(f"scene {path} is larger than PIL's safety limit; split it into tiles") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = "is not an image" if isinstance(exc, UnidentifiedImageError) else "is corrupt or truncated"
        raise UserError(f"scene {path} {reason}") from None
    return Scene(str(path), np.ascontiguousarray(pixels))


# ---------------------------------------------------------------------------------------------- geometry


# ------------------------------------------------------------------------------------------------ points


@dataclass(frozen=True)
class Points:
    """Labelled samples: one window each (the window whose cell contains the point)."""

    x: np.ndarray
    y: np.ndarray
    labels: np.ndarray  # int, into class_names
    class_names: tuple[str, ...]
    windows: np.ndarray  # grid window index per sample (deduplicated)


def read_points(path: str | Path, grid: WindowGrid, classes: list[str] | None = None,
                min_per_class: int = 1) -> Points:
    """Parse POINTS.csv (`x,y,label`); every problem is a one-line UserError naming the file and row."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"labels file {path} does not exist") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise UserError(f"labels file {path} cannot be read as text ({type(exc).__name__})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if not {"x", "y", "label"} <= set(header):
        raise UserError(f"labels file {path} needs a header with columns x,y,label (pixel centres of windows "
                        f"and class names), got {','.join(header) or 'nothing'}")
    reader.fieldnames = header
    xs, ys, names = [], [], []
    for line, row in enumerate(reader, start=2):
        label = (row.get("label") or "").strip()
        try:
            x, y = float(row["x"]), float(row["y"])
        except (TypeError, ValueError):
            raise UserError(f"{path} line {line}: x and y must be numbers, got {row.get('x')!r}, {row.get('y')!r}") from None
        if not np.isfinite([x, y]).all():
            raise UserError(f"{path} line {line}: x and y must be finite numbers")
        if not label:
            raise UserError(f"{path} line {line}: empty label")
        if not (0 <= x < grid.width and 0 <= y < grid.height):
            raise UserError(f"{path} line {line}: point ({x:g}, {y:g}) is outside the scene "
                            f"({grid.width} x {grid.height} pixels; x is the column, y the row)")
        xs.append(x)
        ys.append(y)
        names.append(label)
    if not names:
        raise UserError(f"labels file {path} has no points")
    if classes:
        for line, name in enumerate(names, start=2):
            if name not in classes:
                raise UserError(f"{path} line {line}: unknown label {name!r}{closest(name, classes)}; "
                                f"--classes allows {', '.join(classes)}")
        class_names = tuple(classes)
    else:
        class_names = tuple(sorted(set(names)))
    if len(class_names) < 2:
        raise UserError(f"labels file {path} has too few classes ({', '.join(class_names)}); a map needs "
                        "labelled windows of at least 2 classes")
    labels = np.asarray([class_names.index(n) for n in names], dtype=np.int64)
    windows = grid.index_of(xs, ys)
    # one sample per window; a window labelled twice differently is a contradiction
    first: dict[int, int] = {}
    for i, (w, lab) in enumerate(zip(windows, labels)):
        if w in first and labels[first[w]] != lab:
            j = first[w]
            raise UserError(f"{path}: points ({xs[j]:g}, {ys[j]:g}) {class_names[labels[j]]!r} and ({xs[i]:g}, "
                            f"{ys[i]:g}) {class_names[lab]!r} fall in the same window; move one or use a smaller "
                            "--stride")
        first.setdefault(int(w), i)
    keep = np.asarray(sorted(first.values()))
    counts = np.bincount(labels[keep], minlength=len(class_names))
    if counts.min() < min_per_class:
        short = [f"{class_names[c]} ({counts[c]})" for c in range(len(class_names)) if counts[c] < min_per_class]
        raise UserError(f"labels file {path} has too few windows for {', '.join(short)}; every class needs at "
                        f"least {min_per_class} (points in one window count once)")
    return Points(np.asarray(xs)[keep], np.asarray(ys)[keep], labels[keep], class_names, windows[keep])


def write_points(path: str | Path, xy: np.ndarray, labels) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x", "y", "label"])
        for (x, y), label in zip(np.asarray(xy), labels):
            writer.writerow([f"{x:g}", f"{y:g}", label])


# --------------------------------------------------------------------------------------- images / context


class WindowImages:
    """Array-like (n, 3, size, size) uint8 over windows of a scene, cropped and resized on demand.

    Supports len(), .shape and indexing by an int, a slice or an integer array (what methods and run_model
    use), so a whole scene never sits in memory as pixels."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, scene: Scene, x0: np.ndarray, y0: np.ndarray, window: int, size: int):
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

    Window i of the grid has index len(task.table) + i in images() and features()."""

    scene: Scene | None = None
    grid: WindowGrid | None = None

    @property
    def n_base(self) -> int:
        return self.n_rows

    def window_indices(self, windows=None) -> np.ndarray:
        windows = np.arange(self.grid.n) if windows is None else np.asarray(windows)
        return self.n_base + windows

    def window_images(self) -> WindowImages:
        x0, y0 = self.grid.origins()
        return WindowImages(self.scene, x0, y0, self.grid.window, self.image_size)

    def _scene_key(self) -> list:
        return [MAP_VERSION, self.scene.fingerprint(), self.grid.digest(), self.image_size, PREPROCESSING_VERSION]

    def window_features(self) -> np.ndarray:
        """(n_windows, D) frozen ImageNet features of the grid's windows, cached per scene, grid and size."""
        key = cache_key("map-features", *self._scene_key(), NUMERICS_VERSION, self.backbone,
                        weights_digest(self.backbone))

        def compute():
            return run_model(feature_extractor(self.backbone), self.window_images(), progress=self.progress,
                             description=f"{self.backbone} features of {self.grid.n} windows")

        return self.cache.array("map-features", key, compute)

    def features(self) -> np.ndarray:
        return np.concatenate([super().features(), self.window_features()])

    def features_key(self) -> str:
        return cache_key("map-features", super().features_key(), *self._scene_key())

    def images(self) -> ConcatImages:
        return ConcatImages(super().images(), self.window_images())

    def images_key(self) -> str:
        return cache_key("map-images", super().images_key(), *self._scene_key())

    def base_images_key(self) -> str:
        """images_key() of the base table alone: what pre-training on the base pool depends on."""
        return super().images_key()


# ----------------------------------------------------------------------------------------- classification


def softmax(scores: np.ndarray) -> np.ndarray:
    z = scores.astype(np.float64) - scores.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def classify_windows(method, ctx: MapContext, points: Points, rng: np.random.Generator, chunk: int = 2048,
                     progress: Progress = SILENT) -> tuple[np.ndarray, dict]:
    """Fit the (prepared) method on the labelled windows, predict every window in chunks.

    Returns (probabilities (ny, nx, C) float32 = softmax of the method's scores, timings)."""
    n_way = len(points.class_names)
    started = time.perf_counter()
    method.fit(ctx.window_indices(points.windows), points.labels.copy(), n_way, rng)  # the method's own copy
    fitted = time.perf_counter()
    probs = np.empty((ctx.grid.n, n_way), np.float32)
    with progress.task(f"classifying {ctx.grid.n} windows", ctx.grid.n) as advance:
        for start in range(0, ctx.grid.n, chunk):
            stop = min(start + chunk, ctx.grid.n)
            scores = np.asarray(method.predict(ctx.window_indices(np.arange(start, stop))))
            if scores.shape != (stop - start, n_way):
                raise RuntimeError(f"method returned scores of shape {scores.shape}, expected {(stop - start, n_way)}")
            probs[start:stop] = softmax(scores)
            advance(stop - start)
    return probs.reshape(*ctx.grid.shape, n_way), {"fit_s": fitted - started,
                                                    "predict_s": time.perf_counter() - fitted}


# ------------------------------------------------------------------------------------------------ smoothing


def _neighbour_counts(labels: np.ndarray, n_classes: int, radius: int = 1) -> np.ndarray:
    """(ny, nx, C): how many windows of each class lie in the (2r+1)^2 neighbourhood, the window excluded."""
    ny, nx = labels.shape
    onehot = np.zeros((ny + 2 * radius, nx + 2 * radius, n_classes), np.int32)
    onehot[radius : radius + ny, radius : radius + nx][np.arange(ny)[:, None], np.arange(nx)[None, :], labels] = 1
    counts = np.zeros((ny, nx, n_classes), np.int32)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy or dx:
                counts += onehot[radius + dy : radius + dy + ny, radius + dx : radius + dx + nx]
    return counts


def majority_filter(labels: np.ndarray, n_classes: int, radius: int = 1) -> np.ndarray:
    """Each window takes the most frequent class of its (2r+1)^2 neighbourhood (itself included); on a tie
    it keeps its own class if that is among the most frequent, else the lowest tied class."""
    counts = _neighbour_counts(labels, n_classes, radius)
    own = np.eye(n_classes, dtype=np.int32)[labels]
    counts = counts + own
    best = counts.max(-1)
    keep = counts[np.arange(labels.shape[0])[:, None], np.arange(labels.shape[1])[None, :], labels] == best
    return np.where(keep, labels, counts.argmax(-1))


def mrf_smooth(probs: np.ndarray, beta: float, max_sweeps: int = 30) -> np.ndarray:
    """Potts Markov random field on the window grid, solved by iterated conditional modes (ICM).

    Energy: sum over windows of -log max(p, floor) of its class, plus `beta` for every pair of 8-neighbours
    with different classes. Starts from the argmax; windows are updated in four interleaved sublattices
    (no two updated together are neighbours), so every sweep lowers the energy and ICM converges."""
    ny, nx, n_classes = probs.shape
    unary = -np.log(np.maximum(probs.astype(np.float64), PROBABILITY_FLOOR))
    labels = probs.argmax(-1)
    rows, cols = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    sublattices = [(rows % 2 == a) & (cols % 2 == b) for a in (0, 1) for b in (0, 1)]
    for _ in range(max_sweeps):
        changed = False
        for mask in sublattices:
            counts = _neighbour_counts(labels, n_classes)
            energy = unary + beta * (counts.sum(-1, keepdims=True) - counts)
            current = np.take_along_axis(energy, labels[..., None], -1)[..., 0]
            best = energy.argmin(-1)
            better = mask & (energy.min(-1) < current - 1e-12)
            if better.any():
                labels = np.where(better, best, labels)
                changed = True
        if not changed:
            break
    return labels


def smooth(probs: np.ndarray, method: str = "none", strength: float | None = None) -> np.ndarray:
    """(ny, nx) class labels from (ny, nx, C) probabilities, optionally smoothed over neighbouring windows.

    none: argmax. majority: majority filter of radius `strength` windows (integer >= 1).
    mrf: Potts MRF with pairwise weight `strength` (beta >= 0; 0 is the argmax)."""
    if method not in SMOOTHERS:
        raise UserError(f"unknown smoothing {method!r}{closest(method, SMOOTHERS)}; known: {', '.join(SMOOTHERS)}")
    strength = DEFAULT_STRENGTH[method] if strength is None else float(strength)
    if method == "none":
        return probs.argmax(-1)
    if method == "majority":
        if strength < 1 or strength != int(strength):
            raise UserError(f"--smooth-strength for majority is a radius in windows (an integer >= 1), got {strength:g}")
        return majority_filter(probs.argmax(-1), probs.shape[-1], int(strength))
    if strength < 0 or not np.isfinite(strength):
        raise UserError(f"--smooth-strength for mrf is a weight >= 0, got {strength:g}")
    return mrf_smooth(probs, strength)


# -------------------------------------------------------------------------------------------------- scoring


def binary_scores(predicted: np.ndarray, truth: np.ndarray, scored: np.ndarray | None = None) -> dict:
    """Precision, recall and F1 of the positive class over the scored windows (bool arrays)."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    scored = np.ones_like(truth) if scored is None else np.asarray(scored, bool)
    tp = int((predicted & truth & scored).sum())
    fp = int((predicted & ~truth & scored).sum())
    fn = int((~predicted & truth & scored).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
            "positives": int((truth & scored).sum()), "scored": int(scored.sum())}


# -------------------------------------------------------------------------------------------------- outputs

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#ffe119", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#9a6324", "#800000", "#000075", "#808000", "#aaffc3", "#a9a9a9", "#fabed4"]


def class_colours(n: int) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def area_fractions(grid: WindowGrid, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Fraction of the scene's pixels mapped to each class (cells weighted by their pixel areas)."""
    areas = grid.cell_areas()
    return np.bincount(labels.ravel(), weights=areas.ravel(), minlength=n_classes) / areas.sum()


def render_maps(out: Path, scene: Scene, grid: WindowGrid, labels: np.ndarray, class_names, fractions,
                points: Points | None = None, preview: int = 1600, alpha: float = 0.4, title: str = "") -> list[str]:
    """label_map.png (classes with a legend) and overlay.png (classes over the scene), at most `preview` px."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    scale = min(1.0, preview / max(grid.height, grid.width))
    raster = grid.raster(labels, scale)
    colours = class_colours(len(class_names))
    cmap = ListedColormap(colours)
    handles = [Patch(color=colours[c], label=f"{name} ({100 * fractions[c]:.1f}%)")
               for c, name in enumerate(class_names)]
    h, w = raster.shape
    dpi = 100
    written = []
    for name, background in (("label_map.png", None), ("overlay.png", scene.preview(scale))):
        fig = plt.figure(figsize=(w / dpi, h / dpi + 0.5), dpi=dpi)
        band = 0.5 * dpi / (h + 0.5 * dpi)  # the legend's strip below the map
        ax = fig.add_axes([0, band, 1, 1 - band])
        ax.set_axis_off()
        if background is None:
            ax.imshow(raster, cmap=cmap, vmin=-0.5, vmax=len(class_names) - 0.5, interpolation="nearest")
        else:
            ax.imshow(background, interpolation="nearest")
            ax.imshow(raster, cmap=cmap, vmin=-0.5, vmax=len(class_names) - 0.5, interpolation="nearest",
                      alpha=alpha)
            if points is not None:
                for c in range(len(class_names)):
                    sel = points.labels == c
                    ax.scatter(points.x[sel] * w / grid.width, points.y[sel] * h / grid.height, s=14,
                               marker="o", facecolor=colours[c], edgecolor="white", linewidth=0.8)
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False,
                   title=title or None, title_fontsize=8)
        fig.savefig(out / name, dpi=dpi)
        plt.close(fig)
        written.append(name)
    return written


def write_summary(path: Path, summary: dict) -> None:
    path.write_text(json.dumps(summary, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
                    + "\n")


# ------------------------------------------------------------------------------------------------- the map


@dataclass
class MapResult:
    probabilities: np.ndarray  # (ny, nx, C) raw, softmax of the method's scores
    labels: np.ndarray  # (ny, nx) after smoothing
    summary: dict


def map_scene(method_spec, task, scene: Scene, grid: WindowGrid, points: Points, cache, backbone: str,
              image_size: int, seed: int = 0, smoothing: str = "none", strength: float | None = None,
              out: Path | None = None, progress: Progress = SILENT, preview: int = 1600,
              chunk: int = 2048) -> MapResult:
    """Prepare the method on the base task, fit it on the labelled windows, classify every window, smooth,
    and (with `out`) write label_map.png, overlay.png, probabilities.npy, labels.npy and summary.json."""
    from methods.registry import create_method

    smooth(np.full((1, 1, 2), 0.5, np.float32), smoothing, strength)  # bad smoothing fails before any work
    method = create_method(method_spec.name, **method_spec.options)
    ctx = MapContext(task, cache, backbone, image_size, seed, progress, scene=scene, grid=grid)
    timings = {}
    started = time.perf_counter()
    method.prepare(ctx)
    timings["prepare_s"] = time.perf_counter() - started
    progress.log(f"{method_spec.label}: prepared (base task and {grid.n} windows) in {timings['prepare_s']:.1f} s")
    probs, t = classify_windows(method, ctx, points, np.random.default_rng([seed, 7919]), chunk, progress)
    timings.update(t)
    t0 = time.perf_counter()
    labels = smooth(probs, smoothing, strength)
    timings["smooth_s"] = time.perf_counter() - t0
    n_classes = len(points.class_names)
    fractions = area_fractions(grid, labels, n_classes)
    summary = {
        "scene": scene.path, "scene_size": [grid.width, grid.height], "scene_fingerprint": scene.fingerprint(),
        "method": method_spec.label, "method_config": method.config(), "task": task.name, "backbone": backbone,
        "image_size": image_size, "seed": seed, "window": grid.window, "stride": grid.stride,
        "grid_shape": list(grid.shape), "windows": grid.n, "window_x0": grid.xs, "window_y0": grid.ys,
        "classes": list(points.class_names),
        "labelled_windows": {name: int((points.labels == c).sum()) for c, name in enumerate(points.class_names)},
        "smoothing": smoothing,
        "smoothing_strength": DEFAULT_STRENGTH[smoothing] if strength is None else float(strength),
        "area_fraction": {name: float(fractions[c]) for c, name in enumerate(points.class_names)},
        "window_fraction_raw": {name: float((probs.argmax(-1) == c).mean()) for c, name in enumerate(points.class_names)},
    }
    if out is not None:
        t0 = time.perf_counter()
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "probabilities.npy", probs)
        np.save(out / "labels.npy", labels.astype(np.int16))
        title = f"{method_spec.label}, window {grid.window} stride {grid.stride}, smoothing {smoothing}"
        files = render_maps(out, scene, grid, labels, points.class_names, fractions, points, preview, title=title)
        timings["write_s"] = time.perf_counter() - t0
        summary["files"] = files + ["probabilities.npy", "labels.npy", "summary.json"]
    timings["total_s"] = time.perf_counter() - started
    summary["timings"] = {k: round(v, 3) for k, v in timings.items()}
    if out is not None:
        write_summary(Path(out) / "summary.json", summary)
    return MapResult(probs, labels, summary)
