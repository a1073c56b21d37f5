"""On-disk cache for arrays and checkpoints: atomic writes, content-hash checks, keys from inputs.

A cache file is only ever seen complete (written to a temporary file, then renamed). Each entry stores the
SHA-256 of its payload; a truncated or altered file is reported in one line and recomputed.
An array too large to hold in memory (a scene's windows as pixels) is written a part at a time and read back
as a read-only memory map (`mapped_array`).

A cache folder that is a file (or lies under one) is refused in one line naming it. A cache folder that
cannot be written (read-only, full disk, over quota, no permission) does not stop a run: the first failed
write prints one line naming the folder and the reason, and the run goes on computing without storing
anything more there (entries already in the folder are still read).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from common.errors import UserError
from common.files import atomic_write, atomic_write_bytes
from tasks.datasets.content import default_cache_dir

DEFAULT_CACHE_DIR = default_cache_dir()


def cache_key(*parts) -> str:
    """Stable hash of JSON-serialisable parts (dicts are sorted)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class Cache:
    """Files under one directory, each `<kind>/<key>.<ext>` with a sidecar `.sha256`. Constructing one changes
    no process-wide state: a run's session (benchmark.session) keeps the digests of dataset files beside it."""

    def __init__(self, root: Path | str | None = None, enabled: bool = True):
        self.root = Path(root) if root is not None else DEFAULT_CACHE_DIR
        self.enabled = enabled
        self.writable = enabled
        self.hits: list[str] = []
        self.misses: list[str] = []
        if enabled:
            blocker = next((p for p in (self.root, *self.root.parents) if p.exists()), None)
            if blocker is not None and not blocker.is_dir():
                raise UserError(
                    f"cache folder {self.root} cannot be used: {blocker} is a file; pass --cache-dir "
                    "with a folder (or set BENCH_CACHE_DIR), or move the file away"
                )

    def folder(self, *parts: str) -> Cache:
        """A cache like this one under a sub-folder."""
        sub = copy.copy(self)
        sub.root = self.root.joinpath(*parts)
        sub.hits, sub.misses = [], []
        return sub

    def path(self, kind: str, key: str, ext: str) -> Path:
        return self.root / kind / f"{key}.{ext}"

    def _read_verified(self, path: Path) -> bytes | None:
        digest_path = path.with_name(path.name + ".sha256")
        if not path.exists():
            return None
        try:
            data = path.read_bytes()
            expected = digest_path.read_text().strip() if digest_path.exists() else None
        except OSError as exc:
            _warn(f"cache file {path} cannot be read ({exc.strerror or exc}); recomputing it")
            return None
        if expected != hashlib.sha256(data).hexdigest():
            _warn(f"cache file {path} is corrupt (checksum mismatch); recomputing it")
            return None
        return data

    def _write(self, path: Path, data: bytes) -> None:
        if not self.writable:
            return
        try:
            atomic_write_bytes(path, data)
            atomic_write_bytes(path.with_name(path.name + ".sha256"), hashlib.sha256(data).hexdigest().encode())
        except OSError as exc:
            self._cannot_write(path, exc)

    def _cannot_write(self, path: Path, exc: OSError) -> None:
        """After a failed write of `path`: no payload without its checksum, and no more writes this run."""
        for stale in (path, path.with_name(path.name + ".sha256")):
            try:
                stale.unlink()
            except OSError:
                pass
        self.writable = False
        _warn(
            f"cannot write to cache folder {self.root} ({exc.strerror or exc}); computing without caching "
            "for the rest of this run (free space, fix its permissions or pass another --cache-dir)"
        )

    def _cached(self, kind: str, key: str, ext: str) -> bytes | None:
        """The verified payload for key (a hit), or None if it is absent or corrupt (or the cache is off)."""
        data = self._read_verified(self.path(kind, key, ext)) if self.enabled else None
        if data is not None:
            self.hits.append(f"{kind}/{key}")
        return data

    def cached_array(self, kind: str, key: str) -> np.ndarray | None:
        """The cached array for key, or None if it is absent or corrupt."""
        data = self._cached(kind, key, "npy")
        return None if data is None else np.load(io.BytesIO(data), allow_pickle=False)

    def cached_state_dict(self, kind: str, key: str) -> dict | None:
        """The cached torch checkpoint for key, or None if it is absent or corrupt."""
        data = self._cached(kind, key, "pt")
        return None if data is None else torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)

    def put_array(self, kind: str, key: str, value: np.ndarray) -> None:
        if self.enabled:
            buf = io.BytesIO()
            np.save(buf, value, allow_pickle=False)
            self._write(self.path(kind, key, "npy"), buf.getvalue())

    def put_state_dict(self, kind: str, key: str, state: dict) -> None:
        if self.enabled:
            buf = io.BytesIO()
            torch.save(state, buf)
            self._write(self.path(kind, key, "pt"), buf.getvalue())

    def note(self, kind: str, key: str) -> dict | None:
        """A small JSON record kept beside the entries (e.g. how long a step took here), or None. Not counted as
        a hit: notes inform the user, they never stand in for a computation."""
        data = self._read_verified(self.path(kind, key, "json")) if self.enabled else None
        try:
            value = json.loads(data) if data is not None else None
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def put_note(self, kind: str, key: str, value: dict) -> None:
        if self.enabled:
            self._write(self.path(kind, key, "json"), json.dumps(value, sort_keys=True).encode())

    def array(self, kind: str, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached array for key, computing and storing it on a miss."""
        value = self.cached_array(kind, key)
        if value is None:
            self.misses.append(f"{kind}/{key}")
            value = np.ascontiguousarray(compute())
            self.put_array(kind, key, value)
        return value

    def state_dict(self, kind: str, key: str, compute: Callable[[], dict]) -> tuple[dict, bool]:
        """(state, was_cached) for a torch checkpoint."""
        state = self.cached_state_dict(kind, key)
        if state is not None:
            return state, True
        self.misses.append(f"{kind}/{key}")
        state = compute()
        self.put_state_dict(kind, key, state)
        return state, False

    def mapped_array(self, kind: str, key: str, shape: tuple, dtype, parts: Callable[[], Iterable]) -> np.ndarray:
        """A read-only memory map of the (shape, dtype) array cached under key, for arrays too large to hold in
        memory (a scene's windows as pixels): on a miss the arrays `parts()` yields, rows after rows, are
        written to a .npy file one at a time (memory holds one part), checksummed as they go and renamed into
        place like every entry; a hit is checked against its checksum reading the file a block at a time.
        Where the cache cannot store it, an unlinked temporary file holds it for as long as the array lives."""
        path = self.path(kind, key, "npy")
        if self.enabled and self._mapped_entry_ok(path, tuple(shape), np.dtype(dtype)):
            self.hits.append(f"{kind}/{key}")
            return np.load(path, mmap_mode="r")
        self.misses.append(f"{kind}/{key}")
        if self.writable:
            failed = []  # an OSError of `parts` itself (reading a scene) is its caller's, not the cache's

            def guarded():
                try:
                    yield from parts()
                except OSError as exc:
                    failed.append(exc)
                    raise

            try:
                digest = _write_npy(path, shape, dtype, guarded())
                atomic_write_bytes(path.with_name(path.name + ".sha256"), digest.encode())
                return np.load(path, mmap_mode="r")
            except OSError as exc:
                if failed:
                    raise
                self._cannot_write(path, exc)
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder) / "array.npy"
            _write_npy(tmp, shape, dtype, parts())
            return np.load(tmp, mmap_mode="r")  # the mapping outlives the file's name

    def _mapped_entry_ok(self, path: Path, shape: tuple, dtype: np.dtype) -> bool:
        """Whether `path` holds a (shape, dtype) array whose bytes match its checksum (a warning if not)."""
        digest_path = path.with_name(path.name + ".sha256")
        if not path.exists():
            return False
        try:
            expected = digest_path.read_text().strip() if digest_path.exists() else None
            with open(path, "rb") as f:
                actual = hashlib.file_digest(f, "sha256").hexdigest()
            held = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            _warn(f"cache file {path} cannot be read ({getattr(exc, 'strerror', None) or exc}); recomputing it")
            return False
        if expected != actual or held.shape != shape or held.dtype != dtype:
            _warn(f"cache file {path} is corrupt (checksum or shape mismatch); recomputing it")
            return False
        return True


def _write_npy(path: Path, shape: tuple, dtype, parts: Iterable) -> str:
    """Write the .npy file of a (shape, dtype) array at `path` (atomically) from `parts`, its rows in order, a
    part at a time; the SHA-256 of the file's bytes."""
    shape, dtype, hasher = tuple(shape), np.dtype(dtype), hashlib.sha256()

    def write(f) -> None:
        def put(data: bytes) -> None:
            hasher.update(data)
            f.write(data)

        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        )
        put(header.getvalue())
        rows = 0
        for part in parts:
            part = np.ascontiguousarray(part, dtype=dtype)
            if part.shape[1:] != shape[1:]:
                raise ValueError(f"a part of shape {part.shape} for an array of shape {shape}")
            put(part.tobytes())
            rows += len(part)
        if rows != shape[0]:
            raise ValueError(f"parts of {rows} rows for an array of shape {shape}")

    atomic_write(path, write)
    return hasher.hexdigest()
