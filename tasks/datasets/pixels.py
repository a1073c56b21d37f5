"""Decoded pixels as digests: the same image saved with other bytes (a PNG written again, a lossless re-encode,
a TIFF rewritten) is still the same image.

Each file is decoded as every method sees it (tasks.imageio: `read_image`, then `fit_square` at the run's image
size, the size of the decoded-image cache) and gets the SHA-256 of those pixels and a THUMB x THUMB greyscale
thumbnail of them. Equal pixel digests are the same image at that size; thumbnails within NEAR_RMS grey levels
(root mean square) are near-identical images (a lossy re-encode, a slight rescale or retouch).

Both are cached by the file's content digest (content.py), the size and PIXEL_VERSION, in one small JSON file
per image folder and size beside the file digests: a warm check decodes nothing. A damaged or unwritable cache
file is simply recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from common.files import atomic_write_bytes
from tasks.datasets.content import digest_cache_dir
from tasks.imageio import DECODER_VERSION, fit_square, read_image

PIXEL_VERSION = 1  # bump when what is hashed or thumbnailed changes
THUMB = 16
NEAR_RMS = 2.0  # grey levels
_CHUNK = 1024  # rows of one side compared at once (bounds the distance matrix)


def decode_signature(path: str, size: int) -> tuple[str, bytes]:
    """(SHA-256 of the (3, size, size) model input, THUMB x THUMB greyscale thumbnail bytes)."""
    pixels = fit_square(read_image(path, "RGB", "image"), size)
    thumb = Image.fromarray(pixels.transpose(1, 2, 0)).convert("L").resize((THUMB, THUMB), Image.Resampling.BOX)
    return hashlib.sha256(pixels.tobytes()).hexdigest(), np.asarray(thumb, np.uint8).tobytes()


def _cache_file(folder: str, size: int) -> Path:
    key = hashlib.sha256(f"{folder}\x00{size}\x00{PIXEL_VERSION}\x00{DECODER_VERSION}".encode()).hexdigest()[:24]
    return digest_cache_dir() / f"pixels-{key}.json"


def _load(path: Path) -> dict:
    try:
        files = json.loads(path.read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def pixel_signatures(paths, digests, size: int) -> tuple[list[str], np.ndarray]:
    """(pixel digest per file, (n, THUMB*THUMB) uint8 thumbnails) of `paths`, whose content digests are
    `digests`; cached by content digest (module docstring)."""
    paths = [os.path.realpath(p) for p in paths]  # a link is cached as the file it points to
    out_digest: list[str] = [""] * len(paths)
    thumbs = np.zeros((len(paths), THUMB * THUMB), np.uint8)
    by_folder: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        by_folder.setdefault(os.path.dirname(p), []).append(i)
    for folder, members in by_folder.items():
        cache_file = _cache_file(folder, size)
        files = _load(cache_file)
        missing = [i for i in members if not _known(files.get(os.path.basename(paths[i])), digests[i])]
        with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
            for i, (pixel, thumb) in zip(missing, pool.map(lambda i: decode_signature(paths[i], size), missing)):
                files[os.path.basename(paths[i])] = [digests[i], pixel, thumb.hex()]
        for i in members:
            _, pixel, thumb = files[os.path.basename(paths[i])]
            out_digest[i], thumbs[i] = pixel, np.frombuffer(bytes.fromhex(thumb), np.uint8)
        if missing:
            try:
                atomic_write_bytes(
                    cache_file, json.dumps({"version": PIXEL_VERSION, "size": size, "files": files}).encode()
                )
            except OSError:
                pass
    return out_digest, thumbs


def _known(entry, digest: str) -> bool:
    return isinstance(entry, list) and len(entry) == 3 and entry[0] == digest and len(entry[2]) == 2 * THUMB * THUMB


def near_pairs(ours: np.ndarray, theirs: np.ndarray) -> list[tuple[int, int]]:
    """(i, j) of each row j of `theirs` whose nearest thumbnail in `ours` (row i) is within NEAR_RMS grey levels."""
    if not len(ours) or not len(theirs):
        return []
    a = ours.astype(np.float64)
    a_sq = (a * a).sum(1)
    pairs = []
    for start in range(0, len(theirs), _CHUNK):
        b = theirs[start : start + _CHUNK].astype(np.float64)
        d2 = np.maximum((b * b).sum(1)[:, None] + a_sq[None, :] - 2 * b @ a.T, 0) / a.shape[1]
        nearest = d2.argmin(1)
        for j, i in enumerate(nearest):
            if d2[j, i] <= NEAR_RMS**2:
                pairs.append((int(i), start + j))
    return pairs
