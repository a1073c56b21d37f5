"""Files written at once: a temporary file beside the target, fsync, rename. A crash, `kill -9` or a full disk
leaves the old file or the new one, never a part of either (episode manifests, rewritten results files, and
the cache's entries may all use it: every layer may import common/)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, or what a plain open() would give a new file (mkstemp's are 0600)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Replace `path` by what `write(file)` writes into a binary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_tree(root: Path) -> None:
    """fsync every file under `root`, then every folder (deepest first): what a folder written in a temporary
    place and renamed into place needs, so that after a crash the renamed folder never holds a truncated file."""
    folders = []
    for here, _, files in os.walk(root):
        folders.append(here)
        for name in files:
            fd = os.open(os.path.join(here, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for here in reversed(folders):
        fd = os.open(here, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """For writers that want a file name (matplotlib, Pillow, numpy, GDAL): a temporary path beside `path`
    with the same suffix (they choose the format by it), renamed onto `path` when the block ends without an
    error and removed otherwise, so a killed or failed write never leaves a partial output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def replaced_outputs(out: Path, record: str, previous: Iterable[str] = ()) -> Iterator[Path]:
    """For outputs that belong together (a map's arrays, figures and summary): a staging folder inside `out` to
    write them into. When the block ends without an error they replace those in `out`: `record`, the file
    that describes the set, is removed first and moved in last, so `out` holds a `record` only beside the files
    it describes, and files of the `previous` set (names in `out`) that the new set lacks are removed. An error
    leaves `out` as it was: a failed run never mixes its outputs with an earlier run's."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out, prefix=".incomplete-"))
    try:
        yield stage
        names = sorted(p.name for p in stage.iterdir())
        (out / record).unlink(missing_ok=True)
        for name in set(previous) - set(names):
            if Path(name).name == name and name not in ("", ".", ".."):  # a plain name in `out`, nothing else
                (out / name).unlink(missing_ok=True)
        for name in [n for n in names if n != record] + [n for n in names if n == record]:
            os.replace(stage / name, out / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
