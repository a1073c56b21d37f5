"""Per-episode result rows in append-only CSV files, written under an exclusive file lock.

Rows are appended in small batches, each as one write followed by fsync, so a killed run leaves only whole
rows and a resumed run redoes just the episodes whose rows are missing. A row whose key is already in the
file is not written again (two identical runs at once), and a partial last line (a write cut short by a
crash or a full disk) is ignored when reading and cut off before the next append.
"""
from __future__ import annotations

import csv
import fcntl
import io
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from tasks.errors import UserError

SCHEMA_VERSION = 1
COLUMNS = [
    "schema", "task", "method", "config", "shots", "ways", "queries", "seed", "manifest", "episode",
    "classes", "accuracy", "macro_f1", "class_accuracy", "n_query", "seconds", "backbone", "image_size",
    "git_commit", "versions", "timestamp",
]
# What identifies a row: the same key twice is a duplicate.
KEY = ["task", "method", "config", "shots", "ways", "queries", "manifest", "episode"]


@contextmanager
def locked(path: Path):
    lock_path = path.with_name(path.name + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UserError(f"results path {path} is not writable ({exc.strerror}); choose another with --out") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _check_header(path: Path, header: list[str], columns: list[str] = COLUMNS) -> None:
    if header != columns:
        raise UserError(
            f"results file {path} was written by an incompatible version (columns differ); "
            "write to a new file with --out"
        )


def read_results(path: Path, columns: list[str] = COLUMNS) -> pd.DataFrame:
    """All rows of a results CSV (empty frame when the file does not exist); `columns` is its schema (another
    row format, e.g. the fixed-K protocol's, shares the locking and checks)."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=columns)
    if path.is_dir():
        raise UserError(f"results path {path} is a directory; give a .csv file")
    try:
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
        text = path.read_text() if header is not None else ""
    except OSError as exc:
        raise UserError(f"results file {path} is not readable ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error):
        raise UserError(f"results file {path} is not a text CSV; move it away or write to a new file with --out") \
            from None
    if header is None:
        return pd.DataFrame(columns=columns)
    _check_header(path, header, columns)
    if not text.endswith("\n"):  # a write cut short (a crash, a full disk): its row is not a result
        text = text[: text.rfind("\n") + 1]
    try:
        frame = pd.read_csv(io.StringIO(text), dtype={"config": str, "manifest": str, "git_commit": str,
                                                      "classes": str, "class_accuracy": str})
    except (pd.errors.ParserError, ValueError) as exc:
        raise UserError(f"results file {path} is damaged ({str(exc).splitlines()[0]}); move it away or "
                        "write to a new file with --out") from None
    return frame


def check_results_path(path: Path, columns: list[str] = COLUMNS, manifests: bool = True) -> None:
    """Before any work: the results file is readable and compatible (`columns`), and it (and, with `manifests`,
    the manifests folder beside it) can be written (one-line UserError otherwise). Creates no results file."""
    path = Path(path)
    read_results(path, columns)
    what = "it and its manifests/" if manifests else "it"
    try:
        if manifests:
            (path.parent / "manifests").mkdir(parents=True, exist_ok=True)
        if path.exists():
            with open(path, "a"):
                pass
        else:
            fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise UserError(f"results path {path} is not writable: its folder cannot hold {what} "
                        f"({exc.strerror}: {exc.filename}); choose another with --out") from None


def _drop_torn_tail(path: Path) -> None:
    """Under the lock: a file that does not end in a newline ends in a row whose write was cut short; cut it off
    so that the next row starts on a line of its own."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    print(f"warning: results file {path} ended in a partial row ({size - keep} bytes, from an interrupted "
          "write); removed it", file=sys.stderr)


def _existing_keys(path: Path, key: list[str] = KEY) -> set[tuple[str, ...]]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        cols = [header.index(c) for c in key]
        return {tuple(row[c] for c in cols) for row in reader if len(row) == len(header)}


def append_rows(path: Path, rows: list[dict], columns: list[str] = COLUMNS, key: list[str] = KEY) -> None:
    """Append whole rows under the lock: one write, then fsync. `columns` and `key`: the file's schema and what
    identifies a row in it (see read_results)."""
    if not rows:
        return
    path = Path(path)
    with locked(path):
        new_file = not path.exists() or path.stat().st_size == 0
        if not new_file:
            with open(path, newline="") as f:
                _check_header(path, next(csv.reader(f), []), columns)
            _drop_torn_tail(path)
            # Another process running the same episodes (two identical commands at once) may have written
            # some of these rows already: a (method, task, shots, episode, ...) key is recorded once.
            existing = _existing_keys(path, key)
            rows = [r for r in rows if tuple(str(r[c]) for c in key) not in existing]
            if not rows:
                return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        if new_file:
            writer.writeheader()
        writer.writerows(rows)
        try:
            with open(path, "a", newline="") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise UserError(f"results file {path} is not writable ({exc.strerror}); choose another with --out") from None


def matching(frame: pd.DataFrame, key: dict) -> pd.Series:
    """Rows whose columns equal `key`'s values, compared as text (the file's own representation)."""
    mask = pd.Series(True, index=frame.index)
    for column, value in key.items():
        mask &= frame[column].astype(str) == str(value)
    return mask


def recorded(path: Path, key: dict, column: str, columns: list[str] = COLUMNS) -> set[int]:
    """The values of `column` (episode, seed) already recorded in `path` for the rows matching `key`."""
    with locked(Path(path)):
        frame = read_results(path, columns)
    return set(frame.loc[matching(frame, key), column].astype(int))


def done_episodes(path: Path, key: dict) -> set[int]:
    """Episode numbers already recorded in `path` for the (task, method, config, shots, ...) in key."""
    return recorded(path, key, "episode")