"""On-disk cache for arrays and checkpoints: atomic writes, content-hash checks, keys from inputs.

A cache file is only ever seen complete (written to a temporary file, then renamed). Each entry stores the
SHA-256 of its payload; a truncated or altered file is reported in one line and recomputed.

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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from common.errors import UserError
from common.files import atomic_write_bytes
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
            for stale in (path, path.with_name(path.name + ".sha256")):  # never a payload without its checksum
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
