"""Per-episode result rows in append-only CSV files, written under an exclusive file lock.

Rows are appended in small batches, each as one write followed by fsync, so a killed run leaves only whole
rows and a resumed run redoes just the episodes whose rows are missing.
"""
from __future__ import annotations

import csv
import fcntl
import io
import os
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


def _check_header(path: Path, header: list[str]) -> None:
    if header != COLUMNS:
        raise UserError(
            f"results file {path} was written by an incompatible version (columns differ); "
            "write to a new file with --out"
        )


def read_results(path: Path) -> pd.DataFrame:
    """All rows of a results CSV (empty frame when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    if path.is_dir():
        raise UserError(f"results path {path} is a directory; give a .csv file")
    try:
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
    except OSError as exc:
        raise UserError(f"results file {path} is not readable ({exc.strerror})") from None
    if header is None:
        return pd.DataFrame(columns=COLUMNS)
    _check_header(path, header)
    frame = pd.read_csv(path, dtype={"config": str, "manifest": str, "git_commit": str, "classes": str,
                                     "class_accuracy": str})
    return frame


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append whole rows under the lock: one write, then fsync."""
    if not rows:
        return
    path = Path(path)
    with locked(path):
        new_file = not path.exists() or path.stat().st_size == 0
        if not new_file:
            with open(path, newline="") as f:
                _check_header(path, next(csv.reader(f), []))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
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


def done_episodes(path: Path, key: dict) -> set[int]:
    """Episode numbers already recorded in `path` for the (task, method, config, shots, ...) in key."""
    with locked(Path(path)):
        frame = read_results(path)
    if frame.empty:
        return set()
    mask = pd.Series(True, index=frame.index)
    for column, value in key.items():
        mask &= frame[column].astype(str) == str(value)
    return set(frame.loc[mask, "episode"].astype(int))
