"""`bench migrate`: bring results files of an older schema to the current one, deriving only what can be.

A file's table and version are told by its header (and, where versions share a header, its rows' `schema`
column); the table's history (benchmark/migrations.py) then brings its rows forward one version at a time,
in order. Every field a row has keeps its text, so the numbers stay byte-identical; the file is rewritten
atomically, under its lock, and only once every step has succeeded (a refused file is left untouched).

What the user must state, because no row says it:
- episode rows of schema 1: `--data-dir DIR`, the data they were made on (their data identity is computed from
  there; a task that does not load is refused, never guessed); `--preprocessing` where the rows were not made
  with the current pipeline's;
- crater-score rows of schema 1-3: `--task NAME --backbone NAME` (the command that made them, as the file's
  .md records it), `--data-dir DIR`, and `--method-version NAME=V` for a method now past version 1.
`--refresh-data` recomputes the data identity of a current-schema file (after a change in how the identity
is computed, not in the data). It does so only where the data is unchanged: a row's recorded identity must be
the one the data in `--data-dir` gives now, or the one it gave under an earlier way of computing it
(tasks.registry.earlier_fingerprints); a crater row's scene identity must be the scene's now. Otherwise the
images, labels or scenes changed since the rows were made, and the file is refused, untouched, in one line.
Running it again changes nothing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.cli import add_common, default_data_dir


def add_parser(sub) -> None:
    p = sub.add_parser("migrate", help="bring results files of an older schema to the current one")
    p.add_argument(
        "csv", nargs="+", metavar="CSV", help="results files (episode, fixed-K or crater-score) to migrate in place"
    )
    p.add_argument(
        "--preprocessing", default=None, help="preprocessing the rows were made with (default: the current pipeline's)"
    )
    p.add_argument(
        "--refresh-data", action="store_true", help="recompute the data identity of current-schema rows from --data-dir"
    )
    p.add_argument(
        "--task",
        default=None,
        help="crater-score files of schema 1-3: the base task their rows pre-trained on (the .md names it)",
    )
    p.add_argument(
        "--backbone",
        default=None,
        help="crater-score files of schema 1-3: the backbone their rows were made with (their .md names it)",
    )
    p.add_argument(
        "--method-version",
        action="append",
        default=[],
        metavar="NAME=V",
        help="crater-score files of schema 1-3: the version of method NAME that made its rows (needed for a "
        "method now past version 1)",
    )
    add_common(p)
    p.set_defaults(handler=cmd_migrate)


@dataclass(frozen=True)
class CraterFacts:
    """What the user states about the rows of an old crater-score file: nothing in the rows says it."""

    task: str | None = None
    backbone: str | None = None
    method_versions: dict = field(default_factory=dict)  # method name -> version


def check_path(path: Path) -> None:
    """A one-line UserError for a path given to `bench migrate` that is not a regular file."""
    from benchmark.results import regular_file_problem
    from common.errors import UserError

    problem = regular_file_problem(path) or ("" if path.is_file() else "does not exist")
    if problem == "is a directory":
        raise UserError(f"results path {path} is a directory; give the results files in it (e.g. {path}/*.csv)")
    if problem:
        raise UserError(f"results file {path} {problem}")


def read_file(path: Path) -> tuple[list[str], list[dict]]:
    """(header, whole rows) of a results file."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = [r for r in reader if None not in r.values() and None not in r]
    return list(header), rows


def identify(path: Path, header: list[str], rows: list[dict]):
    """(the table's history, the file's version) from its header and first row."""
    from benchmark.migrations import HISTORIES
    from common.errors import UserError

    for history in HISTORIES.values():
        version = history.version_of(header, rows[0] if rows else None)
        if version is not None:
            return history, version
    raise UserError(f"results file {path} is not an episode-results, fixed-K or crater-scores file of a known schema")


def migrate_file(
    path: Path,
    data_dir: Path,
    preprocessing: str | None = None,
    refresh_data: bool = False,
    facts: CraterFacts = CraterFacts(),
) -> str:
    """Bring one file to its table's current version in place (under its lock), running its history's steps in
    order (benchmark/migrations.py); returns what was done, in a few words."""
    from benchmark.migrations import Facts, crater_identities, task_identities
    from benchmark.provenance import preprocessing_id
    from benchmark.results import csv_text, locked, parse_results
    from common.files import atomic_write_bytes

    path = Path(path)
    check_path(path)  # before a lock is made beside it
    with locked(path):
        header, rows = read_file(path)
        history, version = identify(path, header, rows)
        current = version == history.version
        if current and not refresh_data:
            return "already current (nothing to do)"
        stated = Facts(
            data_dir,
            preprocessing or preprocessing_id(),
            facts.task,
            facts.backbone,
            facts.method_versions,
        )
        notes = history.migrate(path, rows, version, stated)
        identities = {}
        if refresh_data and "scene" in history.current:
            crater_identities(path, rows, data_dir, refresh=current)
        elif refresh_data:
            identities = task_identities(path, rows, data_dir, refresh=current)
            for r in rows:
                r["data"] = identities[r["task"]]
        text = csv_text(rows, history.current, header=True)
        parse_results(path, text, schema_of(history))  # a valid file, checked before it replaces the old one
        atomic_write_bytes(path, text.encode())
    if current:
        data = f" ({', '.join(f'{t}: data {d}' for t, d in identities.items())})" if identities else ""
        return f"refreshed the data identity of {len(rows)} rows{data}"
    return f"migrated from schema {version}{summary(header, rows, history, notes)}: {len(rows)} rows"


def schema_of(history):
    """The live Schema of a history's table."""
    from benchmark.fixedk import FIXED_K
    from benchmark.mapping.craters import CRATERS
    from benchmark.results import EPISODES

    return next(s for s in (EPISODES, FIXED_K, CRATERS) if s.name == history.table)


def summary(header: list[str], rows: list[dict], history, notes: list[str]) -> str:
    """What a migration filled in: the columns it added, with their first row's value (a method's version and
    config, which differ per method, said in the steps' notes instead), and the notes."""
    per_method = () if "method_version" in header else ("method_version", "config")
    added = [
        f"{c}: {rows[0][c] or 'empty'}"
        for c in history.current
        if rows and c not in header and c not in per_method and c != "schema"
    ]
    said = ", ".join(added + notes)
    return f" ({said})" if said else ""


def parse_method_versions(items: list[str]) -> dict:
    from common.errors import UserError

    versions = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit():
            raise UserError(f"--method-version {item}: use NAME=V, V a version number (e.g. sdft=1)")
        versions[name.strip()] = int(value)
    return versions


def cmd_migrate(args) -> int:
    from benchmark.console import console

    data_dir = Path(args.data_dir or default_data_dir())
    facts = CraterFacts(args.task, args.backbone, parse_method_versions(args.method_version))
    for path in args.csv:
        console.print(
            f"{path}: {migrate_file(Path(path), data_dir, args.preprocessing, args.refresh_data, facts)}",
            highlight=False,
        )
    return 0
