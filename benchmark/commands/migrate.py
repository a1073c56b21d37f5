"""`bench migrate`: bring episode-results files of schema 1 to the current schema, deriving only what can be.

Schema 1 rows do not record the data identity, source, preprocessing or method version. Of these:
- source: schema 1 had none (methods pre-trained on the task's own base pool): empty;
- method version: schema 1 predates method versions; every method was at version 1;
- data identity: cannot be read from the rows. It is computed from `--data-dir`, the data the user states the
  rows were made on (the task of each row is loaded from there; a task that does not load is refused, never
  guessed);
- preprocessing: the current pipeline's, which the rows' own numbers attest only if rerunning reproduces them
  (benchmark/reference.sh does for the shipped reference rows); `--preprocessing` names another.
Every other field keeps its text, so the numbers stay byte-identical. The file is rewritten atomically.
Schema 2 rows (episode or fixed-K) do not record the device: every one was made on the CPU (there was no
`--device`), so migrating them adds `device` = cpu and changes nothing else. Crater-score rows of schema 1
lack the device and of schema 2 the source: `bench craters` had no `--source`, so it is empty (the base task's
own base pool).
`--refresh-data` recomputes the data identity of a current-schema file (after a change in how the identity
is computed, not in the data). Running it again changes nothing.
"""
from __future__ import annotations

import csv
from pathlib import Path

from benchmark.cli import add_common, default_data_dir


def add_parser(sub) -> None:
    p = sub.add_parser("migrate", help="bring results files of an older schema to the current one")
    p.add_argument("csv", nargs="+", metavar="CSV", help="episode-results files to migrate in place")
    p.add_argument("--preprocessing", default=None,
                   help="preprocessing the rows were made with (default: the current pipeline's)")
    p.add_argument("--refresh-data", action="store_true",
                   help="recompute the data identity of current-schema rows from --data-dir")
    add_common(p)
    p.set_defaults(handler=cmd_migrate)


def migrate_file(path: Path, data_dir: Path, preprocessing: str | None = None, refresh_data: bool = False) -> str:
    """Migrate one file in place (under its lock); returns what was done, in a few words."""
    from benchmark.fixedk import FIXED_K
    from benchmark.mapping.craters import CRATERS
    from benchmark.results import COLUMNS_V1, EPISODES, csv_text, locked, read_results
    from tasks.files import atomic_write_bytes
    from benchmark.runner import preprocessing_id
    from tasks.errors import UserError
    from tasks.registry import load_task

    path = Path(path)
    if not path.is_file():
        raise UserError(f"results file {path} does not exist")
    with locked(path):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = [r for r in reader if None not in r.values() and None not in r]
        schema = next((s for s in (EPISODES, FIXED_K, CRATERS) if header in (list(s.columns), *s.older())), None)
        if schema is None and header == COLUMNS_V1:
            schema = EPISODES
        if schema is None:
            raise UserError(f"results file {path} is not an episode-results, fixed-K or crater-scores file of a known schema")
        current = header == list(schema.columns)
        if current and not refresh_data:
            return "already current (nothing to do)"
        identities = {}
        if (header == COLUMNS_V1 or refresh_data) and "data" in schema.columns:
            for task in sorted({r["task"] for r in rows}):
                try:
                    identities[task] = load_task(task, data_dir).fingerprint()
                except UserError as exc:
                    raise UserError(f"cannot migrate {path}: its task {task} does not load from --data-dir "
                                    f"{data_dir} ({exc}); give the data its rows were made on") from None
        pre = preprocessing or preprocessing_id()
        for r in rows:
            if header == COLUMNS_V1:
                r.update(source="", method_version="1", preprocessing=pre)
            if not current:  # rows from before --device were all made on the CPU
                r.setdefault("device", "cpu")
                if schema is CRATERS:  # and before --source on bench craters, pre-trained on the base task's own pool
                    r.setdefault("source", "")
                if schema is FIXED_K:  # and drew K per class at random, capping nothing (no --cap, no K-shot lists)
                    r.update(draw="random", capped="")
                if "schema" in schema.columns:
                    r["schema"] = str(schema.version)
            if identities:
                r["data"] = identities[r["task"]]
        atomic_write_bytes(path, csv_text(rows, schema.columns, header=True).encode())
    read_results(path, schema)  # the migrated file is a valid one
    if current:
        what = "refreshed the data identity of"
    elif header == COLUMNS_V1:
        what = "migrated from schema 1:"
    else:
        added = ", ".join(f"{c}: {rows[0][c] or 'empty'}" for c in schema.columns if c not in header) if rows else ""
        what = f"migrated from schema {schema.version - 1 - schema.older().index(header)} ({added}):"
    data = f" ({', '.join(f'{t}: data {d}' for t, d in identities.items())})" if identities else ""
    return f"{what} {len(rows)} rows{data}"


def cmd_migrate(args) -> int:
    from benchmark.console import console

    data_dir = Path(args.data_dir or default_data_dir())
    for path in args.csv:
        console.print(f"{path}: {migrate_file(Path(path), data_dir, args.preprocessing, args.refresh_data)}",
                      highlight=False)
    return 0
