"""What a dataset's files hold, as digests: the content half of a table's cache identity.

A cache entry or a results row must change when an image's pixels change and must not change when the same
files are reached by another path (a symlink, `./data` or an absolute path, another machine). So tables key
caches on the SHA-256 of each file's bytes, never on where the file lies or when it was written.

Hashing every file on every run would cost seconds on large datasets, so the digest of each file is kept on
disk, keyed by the file's resolved path, inode, size and modification time (ns): a warm call only stats the
files. A file rewritten in place gets a new mtime and is hashed again; a file replaced by another under the
same name gets a new inode. The digest cache is one small JSON file per image folder, written atomically
(temporary file, then rename), under `default_cache_dir()/digests` or the folder given; if that folder
cannot be created or written, or a cache file is damaged, the digests are simply computed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections import defaultdict
from pathlib import Path

from common.files import atomic_write_bytes
from common.settings import Settings

DIGEST_CACHE_VERSION = 2  # bump when a stamp's fields change (they hold the ctime)
_CHUNK = 1 << 20

# In-process memory of digests, keyed like the disk cache: repeated fingerprints in one run only stat.
_MEMORY: dict[tuple, str] = {}
_digest_dir: Path | None = None


def default_cache_dir() -> Path:
    """The suite's cache folder: $BENCH_CACHE_DIR, else ~/.cache/marsfsl (common.settings)."""
    return Settings.from_environment().cache_dir


def use_digest_cache(folder: Path | str | None) -> None:
    """Where file_digests keeps its cache when not told (the run's cache folder; None: the default one).
    benchmark.session.session sets it for a run and restores it after."""
    global _digest_dir
    _digest_dir = Path(folder) if folder is not None else None


def digest_cache_folder() -> Path | None:
    """The folder use_digest_cache set (None: the default one), to be restored later."""
    return _digest_dir


def digest_cache_dir() -> Path:
    return _digest_dir if _digest_dir is not None else default_cache_dir() / "digests"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _stamp(st: os.stat_result) -> list:
    # ctime too: a file rewritten in place with its mtime restored (rsync --inplace -t, touch -r) keeps inode,
    # size and mtime, but no user tool can set its ctime
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != DIGEST_CACHE_VERSION:
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def _store(path: Path, folder: str, files: dict) -> None:
    """Atomic write; any failure (read-only or full disk, a file in the way) leaves the cache as it was."""
    try:
        atomic_write_bytes(
            path, json.dumps({"version": DIGEST_CACHE_VERSION, "folder": folder, "files": files}).encode()
        )
    except OSError:
        pass


def _resolve(paths) -> tuple[list[str], list[list]]:
    """(resolved path, stamp) of each file: folders resolved once each, one lstat per file unless it is a link."""
    folders: dict[str, str] = {}
    resolved, stamps = [], []
    for p in map(os.fspath, paths):
        head, name = os.path.split(p)
        real_head = folders.get(head)
        if real_head is None:
            real_head = folders[head] = os.path.realpath(head or ".")
        path = os.path.join(real_head, name)
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            path = os.path.realpath(path)
            st = os.stat(path)
        resolved.append(path)
        stamps.append(_stamp(st))
    return resolved, stamps


def file_digests(paths, cache_dir: Path | str | None = None) -> list[str]:
    """SHA-256 (hex) of each file's bytes, in the order given. Raises FileNotFoundError for a missing file.

    `cache_dir`: where the per-folder digest files lie (default: `digest_cache_dir()`)."""
    cache_root = Path(cache_dir) if cache_dir is not None else digest_cache_dir()
    resolved, stamps = _resolve(paths)
    out: list[str | None] = [None] * len(resolved)
    by_folder: dict[str, list[int]] = defaultdict(list)
    for i, (path, stamp) in enumerate(zip(resolved, stamps)):
        known = _MEMORY.get((path, *stamp))
        if known is not None:
            out[i] = known
        else:
            by_folder[os.path.dirname(path)].append(i)
    for folder, members in by_folder.items():
        cache_file = cache_root / f"{hashlib.sha256(folder.encode()).hexdigest()[:24]}.json"
        files = _load(cache_file)
        changed = False
        for i in members:
            name, stamp = os.path.basename(resolved[i]), stamps[i]
            entry = files.get(name)
            if isinstance(entry, list) and len(entry) == len(stamp) + 1 and entry[:-1] == stamp:
                digest = entry[-1]
            else:
                digest = file_sha256(resolved[i])
                files[name] = [*stamp, digest]
                changed = True
            out[i] = digest
            _MEMORY[(resolved[i], *stamp)] = digest
        if changed:
            _store(cache_file, folder, files)
    return out  # type: ignore[return-value]
