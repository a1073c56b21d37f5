"""The one image decoder: files to 8-bit pixels without losing dynamic range.

Orbital products are often 16-bit or floating point (HiRISE RDRs, CTX mosaics). Converting those straight to
8 bits saturates them (a 16-bit ramp becomes 215-255, a float image all zeros), so every image and scene that
the suite reads goes through this module:

- 8-bit images (PIL modes 1, L, P, RGB, RGBA, LA, CMYK, ...) are converted with PIL as they always were: their
  pixels are unchanged (EXIF orientation applied).
- Any other integer or floating-point image is *stretched*: the valid pixels (finite, not equal to the
  no-data value when one is given) of all bands together give a low and a high limit, the 0.5th and 99.5th
  percentiles (`STRETCH_PERCENTILES`); values map linearly from [low, high] to [0, 255], so the order of
  values is kept and only the extreme 0.5 % tails saturate. Invalid pixels become 0 and are reported in a
  mask. An image whose valid pixels are all equal becomes 0. Bands share the limits, so colours keep their
  balance. `stretch_limits` and `apply_stretch` are public so that a scene read window by window uses limits
  computed once for the whole scene.
- TIFFs that PIL cannot open (multi-band 16-bit or float) are read with tifffile.

Bump `DECODER_VERSION` when any of this changes: cache keys of decoded images include it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from common.errors import UserError

DECODER_VERSION = 2  # bump when decoding changes: caches keyed by it are recomputed
STRETCH_PERCENTILES = (0.5, 99.5)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".jp2"})
_EIGHT_BIT_MODES = frozenset(
    {"1", "L", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "LAB", "HSV", "La", "RGBa", "RGBX"}
)


def valid_mask(array: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """(H, W) bool: pixels that are finite (and not `nodata`) in every band."""
    ok = np.isfinite(array) if array.dtype.kind == "f" else np.ones(array.shape, bool)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        ok &= array != nodata
    return ok.all(axis=2) if ok.ndim == 3 else ok


def stretch_limits(array: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
    """(low, high): the STRETCH_PERCENTILES of the valid pixels of all bands; (0, 0) when none is valid."""
    values = array[valid] if valid is not None else array.reshape(-1, *array.shape[2:])
    values = np.asarray(values, np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 0.0
    low, high = np.percentile(values, STRETCH_PERCENTILES)
    return float(low), float(high)


def apply_stretch(array: np.ndarray, low: float, high: float, valid: np.ndarray | None = None) -> np.ndarray:
    """uint8 of the same shape: [low, high] mapped linearly onto [0, 255]; invalid pixels 0."""
    values = np.asarray(array, np.float64)
    if high > low:
        scaled = (values - low) * (255.0 / (high - low))
        out = np.clip(np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0), 0, 255).round().astype(np.uint8)
    else:
        out = np.zeros(values.shape, np.uint8)
    if valid is not None:
        out[~valid] = 0
    return out


def to_uint8(array: np.ndarray, nodata: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 pixels, valid mask) of an (H, W) or (H, W, C) array of any dtype, by the module's rule."""
    array = np.asarray(array)
    valid = valid_mask(array, nodata)
    if array.dtype == np.uint8 and nodata is None:
        return array, valid
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255, valid
    low, high = stretch_limits(array, valid)
    return apply_stretch(array, low, high, valid), valid


def _read_array(path: Path) -> np.ndarray | Image.Image:
    """A PIL image for 8-bit files, else an (H, W[, C]) array of the file's own dtype."""
    try:
        img = Image.open(path)
    except UnidentifiedImageError:
        if path.suffix.lower() in (".tif", ".tiff"):
            return _read_tiff(path)
        raise
    with img:
        img.load()
        if img.mode in _EIGHT_BIT_MODES:
            transposed = ImageOps.exif_transpose(img)
            return transposed if transposed is not img else img.copy()
        return np.asarray(img)  # I;16*, I, F: the file's own values


def _read_tiff(path: Path) -> np.ndarray:
    try:
        import tifffile
    except ImportError:
        raise UserError(f"image {path} is a TIFF that Pillow cannot read; `pip install tifffile` reads it") from None
    try:
        array = tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for bad files
        raise UserError(f"image {path} is not a readable TIFF ({type(exc).__name__}); replace or remove it") from None
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # planar (C, H, W) to (H, W, C)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise UserError(f"image {path} has {array.ndim} dimensions; expected one image of 1, 3 or 4 bands")
    return array


def read_image(path: str | Path, mode: str = "RGB", what: str = "image") -> Image.Image:
    """The file as an 8-bit PIL image in `mode` ("RGB" or "L"), decoded by the module's rule.

    `what` names the file in errors ("image", "scene")."""
    path = Path(path)
    try:
        decoded = _read_array(path)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist; check the dataset folder") from None
    except Image.DecompressionBombError:
        raise UserError(
            f"{what} {path} is larger than Pillow's safety limit (a decompression bomb?); split it into "
            "tiles or remove it"
        ) from None
    except UnidentifiedImageError:
        raise UserError(f"{what} {path} is not an image; replace or remove it") from None
    except (OSError, SyntaxError, ValueError):
        raise UserError(f"{what} {path} is corrupt or truncated; replace or remove it") from None
    if isinstance(decoded, Image.Image):
        return decoded.convert(mode)
    pixels, _ = to_uint8(decoded)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[..., :3]  # alpha is not image content
    if pixels.ndim == 3 and pixels.shape[2] == 2:
        pixels = pixels[..., 0]  # grey + alpha
    if pixels.ndim == 3 and pixels.shape[2] != 3:
        raise UserError(f"{what} {path} has {pixels.shape[2]} bands; expected 1, 3 or 4")
    return Image.fromarray(np.ascontiguousarray(pixels)).convert(mode)


def fit_square(image: Image.Image | np.ndarray, size: int) -> np.ndarray:
    """(3, size, size) uint8 model input: RGB (greyscale repeated), shorter side resized (bilinear) and
    centre-cropped. The one preprocessing of dataset images and of scene windows."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    fitted = ImageOps.fit(image.convert("RGB"), (size, size), method=Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(fitted, dtype=np.uint8).transpose(2, 0, 1))
