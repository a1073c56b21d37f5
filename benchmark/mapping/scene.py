"""Scenes: the pixels a map is made from, read window by window.

Two sources behind one interface (`path`, `height`, `width`, `window()`, `valid()`, `valid_fractions()`,
`preview()`, `fingerprint()`, `crs_wkt`, `geotransform`):

- `Scene`: an image decoded whole into memory by `tasks.imageio.read_image` (PNG, JPEG, ... through Pillow;
  16-bit and float images stretched by that module's rule). No georeferencing: pixel coordinates.
- `RasterScene`: anything GDAL reads (GeoTIFF, JPEG2000, VRT, ...) through rasterio (the `gis` extra). Pixels
  are read on demand, one window at a time, so memory does not grow with the scene: a scene larger than memory
  maps. Bands: the first three when there are three or more (RGB), else the first (greyscale). 8-bit bands
  are used as they are; any other type is stretched by `tasks.imageio`'s rule with limits computed once for the
  whole scene from a decimated read of its valid pixels (`stretch_limits`), then applied to every window
  (`apply_stretch`). No-data (the raster's nodata value, masks, alpha, non-finite values) is 0 in the window
  pixels and reported by `valid()`; a window with less than MIN_VALID_FRACTION of its pixels valid gets no class.

A window is preprocessed exactly as a dataset image (`tasks.imageio.fit_square`): greyscale replicated to RGB,
then fitted to the method's image size (bilinear).
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from common.errors import UserError
from tasks.imageio import apply_stretch, fit_square, read_image, stretch_limits
from tasks.windows import WindowGrid

MIN_VALID_FRACTION = 0.5  # a window with fewer valid pixels than this is left unclassified
STRETCH_SAMPLE = 2048  # longest side of the decimated read that gives a raster scene's stretch limits
PIL_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
GIS_HINT = "pip install 'marsfsl[gis]' (rasterio, pyogrio, shapely, pyproj)"


def _valid_fractions(scene, grid: WindowGrid) -> np.ndarray:
    x0, y0 = grid.origins()
    out = np.ones(grid.n)
    for i, (x, y) in enumerate(zip(x0, y0)):
        valid = scene.valid(int(x), int(y), grid.window, grid.window)
        if valid is not None:
            out[i] = valid.mean()
    return out


@dataclass(frozen=True, eq=False)
class Scene:
    """A scene held in memory as 8-bit pixels; pixel coordinates (no georeferencing)."""

    path: str
    pixels: np.ndarray  # (H, W) for greyscale or (H, W, 3) uint8
    crs_wkt = None
    geotransform = None

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
        return fit_square(self.pixels[y0 : y0 + window, x0 : x0 + window], size)

    def valid(self, x0: int, y0: int, width: int, height: int) -> np.ndarray | None:
        return None  # decoded images have no no-data

    def valid_fractions(self, grid: WindowGrid) -> np.ndarray:
        return np.ones(grid.n)

    def preview(self, scale: float) -> np.ndarray:
        """(h, w, 3) uint8 downscaled copy for figures."""
        img = Image.fromarray(self.pixels).convert("RGB")
        if scale < 1:
            img = img.resize(
                (max(1, round(self.width * scale)), max(1, round(self.height * scale))), Image.Resampling.BILINEAR
            )
        return np.asarray(img)


def apply_geotransform(geotransform, x: np.ndarray, y: np.ndarray, inverse: bool = False) -> np.ndarray:
    """(n, 2) coordinates through a GDAL geotransform (pixel -> map), or its inverse (map -> pixel)."""
    c, a, b, f, d, e = geotransform
    if inverse:
        det = a * e - b * d
        x, y = x - c, y - f
        return np.column_stack([(e * x - b * y) / det, (-d * x + a * y) / det])
    return np.column_stack([c + a * x + b * y, f + d * x + e * y])


def import_rasterio(what: str):
    try:
        os.environ.setdefault("GDAL_CACHEMAX", "256")  # MB: GDAL's block cache otherwise takes 5% of the RAM
        import rasterio
    except ImportError:
        raise UserError(f"{what} needs the gis extra: {GIS_HINT}") from None
    return rasterio


class RasterScene:
    """A raster read through rasterio, one window at a time (see the module's docstring)."""

    def __init__(self, path: str | Path):
        import_rasterio(f"scene {path}")
        from rasterio.enums import ColorInterp, MaskFlags
        from rasterio.errors import RasterioIOError

        self.path = str(path)
        self._fingerprint = None
        self._local = threading.local()  # one dataset handle per thread: GDAL handles are not thread-safe
        try:
            src = self._src
        except RasterioIOError as exc:
            if not Path(path).exists():
                raise UserError(f"scene {path} does not exist") from None
            raise UserError(f"scene {path} is not a raster GDAL can read ({str(exc).splitlines()[0]})") from None
        self.height, self.width = src.height, src.width
        self.bands = (1, 2, 3) if src.count >= 3 else (1,)
        self.nodata = src.nodata
        self.masked = not all(MaskFlags.all_valid in src.mask_flag_enums[b - 1] for b in self.bands)
        dtypes = {src.dtypes[b - 1] for b in self.bands}
        self.eight_bit = dtypes == {"uint8"}
        self.palette = None  # (256, 3) uint8: a one-band paletted raster shows its palette's colours, as in Pillow
        if self.bands == (1,) and self.eight_bit and src.colorinterp[0] == ColorInterp.palette:
            self.palette = np.zeros((256, 3), np.uint8)
            for index, rgba in src.colormap(1).items():
                self.palette[index] = rgba[:3]
        self.floating = any(np.dtype(d).kind == "f" for d in dtypes)
        georeferenced = src.crs is not None or not src.transform.is_identity
        self.crs_wkt = src.crs.to_wkt() if src.crs is not None else None
        self.geotransform = tuple(src.transform.to_gdal()) if georeferenced else None
        self.limits = None if self.eight_bit else self._stretch_limits()

    @property
    def _src(self):
        src = getattr(self._local, "src", None)
        if src is None:
            import rasterio

            with warnings.catch_warnings():  # a raster without georeferencing is mapped in pixel coordinates
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                src = self._local.src = rasterio.open(self.path)
        return src

    def _stretch_limits(self) -> tuple[float, float]:
        scale = min(1.0, STRETCH_SAMPLE / max(self.height, self.width))
        shape = (len(self.bands), max(1, round(self.height * scale)), max(1, round(self.width * scale)))
        sample = self._src.read(self.bands, out_shape=shape)  # GDAL reads overviews when the file has them
        valid = self._valid_of(sample, lambda: self._src.read_masks(self.bands, out_shape=shape))
        return stretch_limits(np.moveaxis(sample, 0, -1), valid)

    def _valid_of(self, raw: np.ndarray, masks) -> np.ndarray | None:
        valid = None
        if self.masked:
            valid = (masks() > 0).all(0)
        if self.floating:
            finite = np.isfinite(raw).all(0)
            valid = finite if valid is None else valid & finite
        return valid

    def _read(self, x0: int, y0: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray | None]:
        from rasterio.windows import Window

        win = Window(x0, y0, width, height)
        raw = self._src.read(self.bands, window=win)
        valid = self._valid_of(raw, lambda: self._src.read_masks(self.bands, window=win))
        pixels = self._to_uint8(raw)
        if valid is not None:
            pixels = np.where(valid, pixels, 0).astype(np.uint8)
        pixels = np.moveaxis(pixels, 0, -1)
        return np.ascontiguousarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels), valid

    def _to_uint8(self, raw: np.ndarray) -> np.ndarray:
        """(bands, h, w) raw values -> (bands or 3, h, w) uint8 by the module's rule."""
        if self.palette is not None:
            return np.moveaxis(self.palette[raw[0]], -1, 0)
        return raw if self.eight_bit else apply_stretch(raw, *self.limits)

    def window(self, x0: int, y0: int, window: int, size: int) -> np.ndarray:
        return fit_square(self._read(x0, y0, window, window)[0], size)

    def valid(self, x0: int, y0: int, width: int, height: int) -> np.ndarray | None:
        """(height, width) bool, or None when every pixel of the scene is valid."""
        if not (self.masked or self.floating):
            return None
        from rasterio.windows import Window

        win = Window(x0, y0, width, height)
        raw = self._src.read(self.bands, window=win) if self.floating else None
        return self._valid_of(raw, lambda: self._src.read_masks(self.bands, window=win))

    def valid_fractions(self, grid: WindowGrid) -> np.ndarray:
        return _valid_fractions(self, grid)

    def fingerprint(self) -> str:
        """Hash of the bands' values, read in strips (bounded memory), and the stretch applied to them; computed
        once (a read of the whole file)."""
        if self._fingerprint is None:
            self._fingerprint = self._hash()
        return self._fingerprint

    def _hash(self) -> str:
        h = hashlib.sha256(repr((self.height, self.width, self.bands, self.limits, self.nodata)).encode())
        if self.palette is not None:
            h.update(self.palette.tobytes())
        from rasterio.windows import Window

        rows = max(1, 2**24 // (self.width * len(self.bands)))
        for y0 in range(0, self.height, rows):
            win = Window(0, y0, self.width, min(rows, self.height - y0))
            h.update(np.ascontiguousarray(self._src.read(self.bands, window=win)).tobytes())
            if self.masked:
                h.update(np.ascontiguousarray(self._src.read_masks(self.bands, window=win)).tobytes())
        return h.hexdigest()[:16]

    def preview(self, scale: float) -> np.ndarray:
        """(h, w, 3) uint8 decimated copy for figures (read at that size, never whole)."""
        shape = (len(self.bands), max(1, round(self.height * scale)), max(1, round(self.width * scale)))
        raw = self._src.read(self.bands, out_shape=shape)
        pixels = np.moveaxis(self._to_uint8(raw), 0, -1)
        return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else np.ascontiguousarray(pixels)


def load_scene(path: str | Path) -> Scene | RasterScene:
    """PNG/JPEG/BMP/GIF/WebP: decoded whole (Pillow); anything else through GDAL when the gis extra is
    installed, else decoded whole by tasks.imageio (TIFF via Pillow or tifffile, no georeferencing)."""
    path = Path(path)
    if path.suffix.lower() not in PIL_SUFFIXES:
        try:
            import_rasterio(f"scene {path}")
        except UserError:
            if path.suffix.lower() not in (".tif", ".tiff"):
                raise
        else:
            return RasterScene(path)
    try:
        with Image.open(path) as img:
            mode = "L" if img.mode in _GREY_MODES else "RGB"
    except FileNotFoundError:
        raise UserError(f"scene {path} does not exist") from None
    except Exception:  # Pillow cannot open it; read_image tries tifffile and names the problem
        mode = "RGB"
    image = read_image(path, mode, what="scene")
    return Scene(str(path), np.ascontiguousarray(np.asarray(image, dtype=np.uint8)))
