"""Square windows over a scene: where they lie and which window owns each pixel.

A scene of height x width pixels is cut into windows of `window` pixels every `stride` pixels; the last row
and column are aligned to the far edges, so every pixel is covered. Every pixel belongs to the window whose
centre is nearest along each axis (its *cell*); with stride = window / 2 the interior cells are the windows'
central halves. Used by the mapping harness and by datasets cut from scenes (ctx-craters).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from common.errors import UserError

MAX_WINDOWS = 2_000_000  # features alone are 5 KB a window: beyond this, a larger stride is the answer


def window_starts(length: int, window: int, stride: int) -> np.ndarray:
    """Left (top) edges of the windows along one axis: every `stride`, plus one flush with the far edge."""
    if window > length:
        raise UserError(f"--window {window} is larger than the scene ({length} pixels on one side)")
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return np.asarray(starts, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class WindowGrid:
    """Windows of a height x width scene, row-major: window i is row i // nx, column i % nx."""

    height: int
    width: int
    window: int
    stride: int
    xs: np.ndarray = field(init=False)
    ys: np.ndarray = field(init=False)

    def __post_init__(self):
        if self.window < 1 or self.stride < 1:
            raise UserError(f"--window and --stride must be positive, got {self.window} and {self.stride}")
        if self.stride > self.window:
            raise UserError(
                f"--stride {self.stride} is larger than --window {self.window}: pixels between "
                "windows would be mapped without being seen"
            )
        object.__setattr__(self, "xs", window_starts(self.width, self.window, self.stride))
        object.__setattr__(self, "ys", window_starts(self.height, self.window, self.stride))
        if self.n > MAX_WINDOWS:
            raise UserError(
                f"{self.n} windows (window {self.window}, stride {self.stride}) exceed {MAX_WINDOWS}; "
                "use a larger --stride"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.ys), len(self.xs)

    @property
    def n(self) -> int:
        return len(self.xs) * len(self.ys)

    def origins(self) -> tuple[np.ndarray, np.ndarray]:
        """(x0, y0) of every window, row-major."""
        y0, x0 = np.meshgrid(self.ys, self.xs, indexing="ij")
        return x0.ravel(), y0.ravel()

    def centres(self) -> np.ndarray:
        """(n, 2) window centres (x, y) in pixel coordinates (pixel p spans [p, p + 1))."""
        x0, y0 = self.origins()
        return np.stack([x0 + self.window / 2, y0 + self.window / 2], axis=1)

    def digest(self) -> str:
        # the same value as methods.cache.cache_key("grid", ...): cached map features stay valid
        blob = json.dumps(["grid", self.height, self.width, self.window, self.stride]).encode()
        return hashlib.sha256(blob).hexdigest()[:20]

    # A pixel (or any point) belongs to the window whose centre is nearest along each axis; ties go to the
    # later window. Boundaries are the midpoints between consecutive window centres.
    def _boundaries(self, axis: str) -> np.ndarray:
        starts = self.xs if axis == "x" else self.ys
        centres = starts + self.window / 2
        return (centres[:-1] + centres[1:]) / 2

    def column_of(self, x) -> np.ndarray:
        return np.searchsorted(self._boundaries("x"), np.asarray(x, dtype=np.float64), side="right")

    def row_of(self, y) -> np.ndarray:
        return np.searchsorted(self._boundaries("y"), np.asarray(y, dtype=np.float64), side="right")

    def index_of(self, x, y) -> np.ndarray:
        """Window index whose cell contains each point (x, y)."""
        return self.row_of(y) * len(self.xs) + self.column_of(x)

    def cell_edges(self, axis: str) -> np.ndarray:
        """(n_axis + 1,) pixel edges of the cells: cell j spans pixels [edges[j], edges[j + 1])."""
        length = self.width if axis == "x" else self.height
        inner = np.ceil(self._boundaries(axis) - 0.5).astype(np.int64)  # first pixel whose centre is past it
        return np.concatenate([[0], inner, [length]])

    def cell_areas(self) -> np.ndarray:
        """(ny, nx) pixels in each window's cell; they sum to the scene's area."""
        return np.outer(np.diff(self.cell_edges("y")), np.diff(self.cell_edges("x")))

    def raster(self, values: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Per-window values (ny, nx, ...) spread over the scene's pixels, optionally downscaled by `scale`:
        output pixel (r, c) takes the value of the window whose cell holds the point ((c+.5)/scale, (r+.5)/scale)."""
        values = np.asarray(values)
        if values.shape[:2] != self.shape:
            raise ValueError(f"values of shape {values.shape} do not match the grid {self.shape}")
        out_h, out_w = max(1, round(self.height * scale)), max(1, round(self.width * scale))
        rows = self.row_of((np.arange(out_h) + 0.5) * self.height / out_h)
        cols = self.column_of((np.arange(out_w) + 0.5) * self.width / out_w)
        return values[rows[:, None], cols[None, :]]
