"""Result rows in append-only CSV files, written under an exclusive file lock; one Schema object per table.

A Schema (columns, key, version, what a valid row holds) serves the episode rows of `bench run` (EPISODES),
the fixed-K rows (benchmark/fixedk.FIXED_K) and any other table that needs the same lock, checks and reuse
rules. Every file is checked when read (Schema.check: one line naming file, line and column; two rows of
one key with different outcomes are refused, naming both lines). A results path must be a regular file: a
named pipe or a device is refused before it is opened. A Schema knows only its table's current version; a
file of an older one is refused with the command that migrates it (benchmark/migrations.py has every table's
history).

Rows are appended in small batches, each as one write followed by fsync, so a killed run leaves only whole
rows and a resumed run redoes just the episodes whose rows are missing. A row whose key is already in the
file is not written again (two identical runs at once), and a partial last line (a write cut short by a
crash or a full disk) is ignored when reading and cut off before the next append; a whole last row that
lacks only its newline (Schema.whole_row_end tells them apart) is kept.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.columns import CONDITIONS, EPISODE_COLUMNS, WEIGHTS_COLUMNS
from benchmark.migrations import history
from common.errors import UserError
from common.files import atomic_write_bytes
from common.settings import SEED_MAX


@dataclass(frozen=True)
class Schema:
    """A results table: its columns, what identifies a row (`key`), its version, and what a valid row holds.

    `measurement` names what a user asks for (task, method, shots, ...), `unit` the column that counts the
    repeats of a measurement (episode, seed); the rest of the key (`conditions`: data identity, backbone,
    image size, preprocessing, method version and config, source) is what else determines a row: rows of the
    same measurement under other conditions, or written by other code (`git_commit`), are never taken for
    this run's (see `plan`).
    """

    name: str
    version: int
    columns: tuple[str, ...]
    measurement: tuple[str, ...]
    conditions: tuple[str, ...]
    unit: str
    unit_fractions: tuple[str, ...] = ()  # floats in [0, 1]
    counts: dict = field(default_factory=dict)  # integer column -> smallest valid value
    seconds: tuple[str, ...] = ("seconds",)
    flags: tuple[str, ...] = ()  # columns holding 0 or 1
    row_check: Callable | None = None  # (frame, path): checks across columns, after `check`
    # What a row measured: two rows of one key that differ here contradict each other (see `check`).
    outcome: tuple[str, ...] = ()
    # What the last column of a whole row looks like (a regular expression): a last line without its newline
    # whose last field matches is a row saved without a final newline (by an editor), not a write cut short.
    # "": no column tells, and such a line is taken for a write cut short.
    whole_row_end: str = ""

    @property
    def key(self) -> list[str]:
        return list(self.measurement) + list(self.conditions) + [self.unit]

    def check(self, frame: pd.DataFrame, path: Path) -> pd.DataFrame:
        """`frame` (read as text) with its numeric columns converted; a one-line UserError naming file, line and
        column at the first value that cannot be a result."""
        frame = frame.copy()

        def fail(mask, column, why):
            i = int(np.flatnonzero(np.asarray(mask))[0])
            raise UserError(
                f"results file {path}, line {i + 2}: column {column} is {frame[column].iloc[i]!r}, {why}; "
                "correct or delete that row, or move the file away"
            )

        if "schema" in frame:
            wrong = frame["schema"] != str(self.version)
            if wrong.any():
                fail(wrong, "schema", f"not this file's schema version {self.version}")
        for column in self.unit_fractions:
            values = pd.to_numeric(frame[column], errors="coerce")
            outside = ~((values >= 0) & (values <= 1))  # NaN and inf included
            if outside.any():
                fail(outside, column, "not a number in [0, 1]")
            frame[column] = values.astype(float)
        for column in self.seconds:
            values = pd.to_numeric(frame[column].replace("", np.nan), errors="coerce")
            bad = (frame[column] != "") & ~(values >= 0)
            if bad.any():
                fail(bad, column, "not a number of seconds")
            frame[column] = values.astype(float)
        for column, low in self.counts.items():
            high = SEED_MAX if column == "seed" else 2**31 - 1
            values = []
            for i, text in enumerate(frame[column].tolist()):
                try:
                    value = int(text)
                except ValueError:
                    value = None
                if value is None or not low <= value <= high:
                    fail(np.arange(len(frame)) == i, column, f"not an integer from {low} to {high}")
                values.append(value)
            frame[column] = np.array(values, dtype=np.int64)
        for column in self.flags:
            bad = ~frame[column].isin(["0", "1"])
            if bad.any():
                fail(bad, column, "not 0 or 1")
            frame[column] = (frame[column] == "1").astype(np.int64)
        if self.row_check is not None and len(frame):
            self.row_check(frame, path)
        self.check_contradictions(frame, path)
        return frame

    def check_contradictions(self, frame: pd.DataFrame, path: Path) -> None:
        """Two rows of one key are one measurement recorded twice: with different outcomes, one is wrong, and
        nothing here can tell which (bench leaderboard refuses them too), so the file is refused."""
        if not self.outcome or len(frame) < 2:
            return
        repeated = frame[frame.duplicated(self.key, keep=False)]
        if repeated.empty:
            return
        clash = repeated.drop_duplicates(self.key + list(self.outcome))
        clash = clash[clash.duplicated(self.key, keep=False)]
        if clash.empty:
            return
        first = clash.iloc[0]
        same = clash[(clash[self.key] == first[self.key]).all(axis=1)]
        a, b = same.index[:2]
        column = next(c for c in self.outcome if frame.at[a, c] != frame.at[b, c])
        what = " ".join(f"{c} {frame.at[a, c]}" for c in (*self.measurement, self.unit) if c != "manifest")
        raise UserError(
            f"results file {path}, lines {a + 2} and {b + 2}: two rows of the same measurement ({what}) "
            f"with different {column} ({frame.at[a, column]} and {frame.at[b, column]}); delete the wrong "
            "one, or move the file away"
        )


def check_episode_rows(frame: pd.DataFrame, path: Path) -> None:
    """What EPISODES.check cannot see column by column: n_query = ways x queries, and as many classes and
    per-class accuracies (each in [0, 1]) as ways."""
    from benchmark.scoring import split_labels

    def fail(i, column, why):
        raise UserError(
            f"results file {path}, line {i + 2}: column {column} is {frame[column].iloc[i]!r}, {why}; "
            "correct or delete that row, or move the file away"
        )

    wrong = frame["n_query"] != frame["ways"] * frame["queries"]
    if wrong.any():
        fail(int(np.flatnonzero(wrong.to_numpy())[0]), "n_query", "not ways x queries")
    for i, (ways, classes, accs) in enumerate(zip(frame["ways"].tolist(), frame["classes"], frame["class_accuracy"])):
        if len(split_labels(classes)) != ways:
            fail(i, "classes", f"which does not name {ways} classes (ways)")
        values = accs.split("|")
        if len(values) != ways:
            fail(i, "class_accuracy", f"which does not hold {ways} values, one per class")
        try:
            if not all(0 <= float(v) <= 1 for v in values):
                fail(i, "class_accuracy", "which holds a value outside [0, 1]")
        except ValueError:
            fail(i, "class_accuracy", "which holds a value that is not a number")


# A row's timestamp as the harness writes it: datetime.now(timezone.utc).isoformat(timespec="seconds").
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)"

EPISODES = Schema(
    name="episode results",
    version=5,
    columns=EPISODE_COLUMNS,
    measurement=("task", "method", "shots", "ways", "queries", "manifest"),
    conditions=CONDITIONS + WEIGHTS_COLUMNS,
    unit="episode",
    unit_fractions=("accuracy", "macro_f1"),
    counts={
        "shots": 1,
        "ways": 2,
        "queries": 1,
        "seed": 0,
        "episode": 0,
        "n_query": 1,
        "image_size": 1,
        "method_version": 0,
    },
    flags=("transductive", "isolated"),
    row_check=check_episode_rows,
    outcome=("classes", "accuracy", "macro_f1", "class_accuracy", "n_query"),
    whole_row_end="[01]",  # the last column is a flag: a write cut short leaves it empty
)
SCHEMA_VERSION = EPISODES.version
COLUMNS = list(EPISODES.columns)
KEY = EPISODES.key


# The tables marsfsl writes, each told by a column no other table has (in every version), and the command that
# shows one: a file given where another table is read is named as such, not as an incompatible version. (Their
# Schemas live in modules that import this one; tests/test_small_inputs.py checks the columns against them.)
TABLES = (
    ("episode results", "episode", "`bench leaderboard {path}` shows it"),
    ("fixed-K results", "weighted_f1", "`bench leaderboard --fixedk {path}` shows it"),
    (
        "crater map scores",
        "smoothing",
        "`bench craters run --out STEM` appends to such a file (STEM.csv) and writes STEM.md beside it",
    ),
)


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


@contextmanager
def locked_if_present(path: Path):
    """The lock for reading: a file that does not exist yet has nothing to read, and reading it must leave no
    `.lock` behind (a run that fails before its first row leaves no debris)."""
    if Path(path).exists():
        with locked(Path(path)):
            yield
    else:
        yield


def _head(f) -> tuple[list[str] | None, list[str] | None]:
    """The header and first row of an open CSV file (None where there is none)."""
    reader = csv.reader(f)
    header = next(reader, None)
    return header, (next(reader, None) if header is not None else None)


def _check_header(path: Path, header: list[str], schema: Schema, first: list[str] | None = None) -> None:
    """A file of `schema`'s current version passes; one of an older version is refused with the command that
    migrates it (benchmark/migrations.py), one of another table or of no known version in one line."""
    past = history(schema.name)
    version = past.version_of(header, dict(zip(header, first)) if first is not None else None) if past else None
    if header == list(schema.columns) and version in (None, schema.version):
        return
    if version is not None:
        raise UserError(past.refusal(path, version))
    for name, column, shown_by in TABLES:  # another table's file, of any of its versions
        if name != schema.name and column in header:
            raise UserError(f"results file {path} holds {name}, not {schema.name}; {shown_by.format(path=path)}")
    raise UserError(
        f"results file {path} was written by an incompatible version (columns differ); write to a new file with --out"
    )


def regular_file_problem(path: Path) -> str | None:
    """Why an existing `path` cannot be read as a results file (None: it can, or it does not exist). A named
    pipe or a device is refused before it is opened: reading one waits for a writer that never comes."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"is {kind}, not a regular file"


def _whole_row(line: str, header: list[str], schema: Schema) -> bool:
    """Whether `line`, the file's last line, which lacks its newline, is a whole row (see Schema.whole_row_end)."""
    if not schema.whole_row_end or not line:
        return False
    try:
        fields = next(csv.reader([line]), [])
    except csv.Error:
        return False
    return len(fields) == len(header) and re.fullmatch(schema.whole_row_end, fields[-1]) is not None


def read_results(path: Path, schema: Schema = EPISODES) -> pd.DataFrame:
    """All rows of a results CSV of `schema` (an empty frame when the file does not exist), checked (see
    Schema.check) and with numeric columns converted; text columns stay text."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame({c: pd.Series(dtype=object) for c in schema.columns})
    problem = regular_file_problem(path)
    if problem:
        raise UserError(f"results path {path} {problem}; give a .csv file")
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"results file {path} is not readable ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(
            f"results file {path} is not a text CSV; move it away or write to a new file with --out"
        ) from None
    return parse_results(path, text, schema)


def parse_results(path: Path, text: str, schema: Schema = EPISODES) -> pd.DataFrame:
    """The rows of `text`, the whole text of results file `path`, checked as read_results checks a file: so
    that a file about to be written (`bench migrate`'s) is checked before it replaces the one on disk."""
    try:
        header, first = _head(io.StringIO(text))
    except csv.Error:
        raise UserError(
            f"results file {path} is not a text CSV; move it away or write to a new file with --out"
        ) from None
    if header is None:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in schema.columns})
    _check_header(path, header, schema, first)
    if not text.endswith("\n"):
        cut = text.rfind("\n") + 1
        if cut and not _whole_row(text[cut:], header, schema):  # a write cut short (a crash, a full disk)
            text = text[:cut]
        else:  # a whole row, or the header alone, saved without its newline
            text += "\n"
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, ValueError) as exc:
        raise UserError(
            f"results file {path} is damaged ({str(exc).splitlines()[0]}); move it away or "
            "write to a new file with --out"
        ) from None
    return schema.check(frame, path)


def check_results_path(path: Path, schema: Schema = EPISODES) -> None:
    """Before any work: the results file is readable and of `schema`, and it can be written beside (one-line
    UserError otherwise). Creates nothing: a run that fails before its first row leaves no debris."""
    path = Path(path)
    read_results(path, schema)
    try:
        if path.exists():
            with open(path, "a"):
                pass
        else:
            folder = path.parent
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
            if not folder.is_dir():
                raise NotADirectoryError(20, "Not a directory", str(folder))
            fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".probe")
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise UserError(
            f"results path {path} is not writable ({exc.strerror}: {exc.filename}); choose another with --out"
        ) from None


def _drop_torn_tail(path: Path, schema: Schema) -> None:
    """Under the lock, in a file whose header `append_rows` checked: a file that does not end in a newline ends
    in a row whose write was cut short; cut it off so that the next row starts on a line of its own. A whole
    row (see Schema.whole_row_end), or the header alone, saved without its newline gets one instead."""
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
        tail = data[keep:].decode(errors="replace")
        if keep == 0 or _whole_row(tail, list(schema.columns), schema):
            f.write(b"\n")
            torn = False
        else:
            f.truncate(keep)
            torn = True
        f.flush()
        os.fsync(f.fileno())
    if torn:
        print(
            f"warning: results file {path} ended in a partial row ({size - keep} bytes, from an interrupted "
            "write); removed it",
            file=sys.stderr,
        )


def _existing_keys(path: Path, key: list[str]) -> set[tuple[str, ...]]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        cols = [header.index(c) for c in key]
        return {tuple(row[c] for c in cols) for row in reader if len(row) == len(header)}


def csv_text(rows: list[dict], columns, header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def append_rows(path: Path, rows: list[dict], schema: Schema = EPISODES) -> None:
    """Append whole rows of `schema` under the lock: one write, then fsync. A row whose key is in the file
    already is not written again."""
    if not rows:
        return
    if "schema" in schema.columns:  # every row says which version of its table it is (benchmark/migrations.py)
        rows = [{**r, "schema": schema.version} for r in rows]
    path = Path(path)
    with locked(path):
        new_file = not path.exists() or path.stat().st_size == 0
        if not new_file:
            with open(path, newline="") as f:
                header, first = _head(f)
            _check_header(path, header or [], schema, first)
            _drop_torn_tail(path, schema)
            # Another process running the same episodes (two identical commands at once) may have written
            # some of these rows already: a key is recorded once.
            existing = _existing_keys(path, schema.key)
            rows = [r for r in rows if tuple(str(r[c]) for c in schema.key) not in existing]
            if not rows:
                return
        try:
            with open(path, "a", newline="") as f:
                f.write(csv_text(rows, schema.columns, header=new_file))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise UserError(
                f"results file {path} is not writable ({exc.strerror}); choose another with --out"
            ) from None


def matching(frame: pd.DataFrame, key: dict) -> pd.Series:
    """Rows whose columns equal `key`'s values, compared as text (the file's own representation)."""
    mask = pd.Series(True, index=frame.index)
    for column, value in key.items():
        mask &= frame[column].astype(str) == str(value)
    return mask


# ---------------------------------------------------------------------------------------------------------------
# Which recorded rows a run may take as its own. A run asks for a measurement (task, method, shots, ...) under
# conditions (data, backbone, image size, ...) with the code of one git commit. Rows of the measurement under
# other conditions are another experiment, rows under the same conditions from another commit were made by
# other code: neither is taken without the user saying so (`--fresh`, `--reuse-stale`).

CONDITION_WORDS = {
    "source": "with source dataset {!r}",
    "data": "on other data (data identity {})",
    "method_version": "by method version {}",
    "config": "with method config {}",
    "backbone": "with backbone {}",
    "image_size": "at image size {}",
    "preprocessing": "with image preprocessing {}",
    "scene": "on another scene (scene identity {})",
    "weights": "with other backbone weights (digest {})",
    "transductive": "with transductive {}",
}


def _most_common(values: pd.Series) -> str:
    counts = values.astype(str).value_counts()
    more = f" (and {len(counts) - 1} other value{'s' if len(counts) > 2 else ''})" if len(counts) > 1 else ""
    return f"{counts.index[0]}{more}"


def reusable_units(
    frame: pd.DataFrame,
    schema: Schema,
    measurement: dict,
    conditions: dict,
    commit: str,
    path: Path,
    what: str,
    reuse_stale: bool = False,
) -> set[int]:
    """The units (episodes, seeds) of `measurement` recorded in `frame` that this run may take as done. Raises a
    one-line UserError when the file holds rows of the measurement under other conditions (saying how many and
    what differs) or, unless `reuse_stale`, rows under these conditions from another git commit."""
    rows = frame[matching(frame, measurement)]
    if rows.empty:
        return set()
    same = matching(rows, conditions)
    other = rows[~same]
    if len(other):
        column = next(c for c in schema.conditions if (other[c].astype(str) != str(conditions[c])).any())
        differ = other[other[column].astype(str) != str(conditions[column])]
        words = CONDITION_WORDS.get(column, column + " {}")
        raise UserError(
            f"{len(differ)} rows of {what} in {path} were made {words.format(_most_common(differ[column]))}"
            f", this run uses {conditions[column]}; --fresh sets the file's rows of {what} aside and "
            "recomputes, or write to another file with --out"
        )
    stale = rows["git_commit"].astype(str) != str(commit)
    if stale.any() and not reuse_stale:
        raise UserError(
            f"{int(stale.sum())} rows of {what} in {path} were made by other code (git commit "
            f"{_most_common(rows.loc[stale, 'git_commit'])}; this is {commit}); --reuse-stale keeps them "
            "(everything else matches), --fresh sets them aside and recomputes"
        )
    return set(rows[schema.unit].astype(int))


SET_ASIDE_SUFFIX = ".set-aside.csv"


def set_aside_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).stem + SET_ASIDE_SUFFIX)


def set_aside(path: Path, schema: Schema, measurements: list[dict]) -> int:
    """Under the lock: move every row of the given measurements out of `path` (rewritten atomically) into
    `set_aside_path(path)` (appended); returns how many rows moved."""
    path = Path(path)
    if not path.exists():
        return 0
    with locked(path):
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return 0
            lines = [row for row in reader if len(row) == len(header)]
            _check_header(path, header, schema, lines[0] if lines else None)
        pos = {c: header.index(c) for c in schema.columns}
        wanted = [{pos[c]: str(v) for c, v in m.items()} for m in measurements]
        moved = [row for row in lines if any(all(row[i] == v for i, v in m.items()) for m in wanted)]
        if not moved:
            return 0
        kept = [row for row in lines if not any(all(row[i] == v for i, v in m.items()) for m in wanted)]

        def text(rows, with_header):
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            if with_header:
                writer.writerow(header)
            writer.writerows(rows)
            return buf.getvalue()

        aside = set_aside_path(path)
        try:
            new = not aside.exists() or aside.stat().st_size == 0
            with open(aside, "a", newline="") as f:
                f.write(text(moved, new))
                f.flush()
                os.fsync(f.fileno())
            atomic_write_bytes(path, text(kept, True).encode())
        except OSError as exc:
            raise UserError(f"cannot set rows of {path} aside into {aside} ({exc.strerror})") from None
    return len(moved)
