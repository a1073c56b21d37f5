"""Merge result CSVs (e.g. from several machines) and turn them into a leaderboard with paired comparisons.

Merging rules:
- A (task, ways, shots, queries) setting must come from the same episode streams (`manifest`) in every file
  that has it: different seeds or sampler versions draw different episodes, so their accuracies are not
  paired and cannot be ranked together. Such files are refused with a one-line error.
- A row is identified by `results.KEY`. The same key twice with the same scores is one episode recorded twice
  (a file given twice, an overlapping rerun): one copy is kept. The same key with different scores is a
  conflict and is refused, naming both files.
- A row's key holds what else determines it (results.EPISODES.conditions: data identity, source, method
  version and config, backbone, image size, preprocessing). A method label whose rows differ in any of these
  is shown as one entry per value, named by what differs (`protonet [image_size=32]`, `protonet [config
  3f2a1c]`), never averaged into one.
The merged rows are sorted by KEY, so the leaderboard does not depend on the order or split of the files.

Transductive methods (rows with `transductive` = 1: they read their episode's unlabelled query features) are
ranked with the others and marked in every table (`marked`); `inductive_only` leaves them out, and
`to_transductive` puts the best transductive method of each task and shots beside the best inductive one.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
from pathlib import Path

import pandas as pd

from benchmark.results import EPISODES, KEY, SET_ASIDE_SUFFIX, read_results
from benchmark.stats import compare_methods, pm
from common.errors import UserError
from common.settings import DEFAULTS

SETTING = ["task", "ways", "shots", "queries"]
STREAM = SETTING + ["manifest"]
SCORES = ["classes", "accuracy", "macro_f1", "class_accuracy", "n_query"]


def default_paths() -> list[str]:
    """Without file names: the episode-result files of the user's runs folder (runs/*.csv) if it has any, else
    the reference results that ship with the project (results/*.csv). Those folders also hold other tables
    (fixed-K rows, the CTX crater scores) and rows set aside by --fresh: only episode-result files are taken."""
    for folder in (DEFAULTS.runs, DEFAULTS.reference):
        found = [
            p
            for p in sorted(glob.glob(str(folder / "*.csv")))  # a named pipe there is no file to read
            if Path(p).is_file() and has_episode_header(Path(p)) and not p.endswith(SET_ASIDE_SUFFIX)
        ]
        if found:
            return found
    raise UserError(
        f"no results files given and no episode results in {DEFAULTS.runs}/ or {DEFAULTS.reference}/; "
        "name CSV files or run `bench run` first"
    )


def resolve_paths(paths: list[str] | None) -> list[Path]:
    """The given CSV files (deduplicated, in order), or `default_paths()` when none are given."""
    if not paths:
        paths = default_paths()
    out, seen = [], set()
    for text in paths:
        path = Path(text)
        if not path.exists():
            raise UserError(
                f"results file {path} does not exist"
                + (" (no file matches that pattern)" if any(c in text for c in "*?[") else "")
            )
        if path.is_dir():
            raise UserError(f"results path {path} is a directory; give .csv files (e.g. {path}/*.csv)")
        if path.resolve() not in seen:
            seen.add(path.resolve())
            out.append(path)
    return out


def has_episode_header(path: Path) -> bool:
    """Whether the file's first line is the header `bench run` writes (or wrote under an older schema)."""
    from benchmark.migrations import EPISODES

    try:
        with open(path, newline="") as f:
            return next(csv.reader(f), []) in EPISODES.headers()
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def _read(path: Path) -> pd.DataFrame:
    frame = read_results(path)  # checked: numbers in range, classes matching class_accuracy, ...
    frame["file"] = str(path)
    return frame


def _check_streams(frame: pd.DataFrame) -> None:
    streams = frame.groupby(SETTING + ["file"], sort=False)["manifest"].agg(lambda s: tuple(sorted(set(s))))
    for setting, per_file in streams.groupby(level=list(range(len(SETTING))), sort=True):
        if per_file.nunique() < 2:
            continue
        items = [(key[-1], manifests) for key, manifests in per_file.items()]
        file_a, set_a = items[0]
        file_b, set_b = next((f, m) for f, m in items if m != set_a)
        only_a, only_b = sorted(set(set_a) - set(set_b)), sorted(set(set_b) - set(set_a))
        task, ways, shots, queries = setting

        def seeds(file, manifests):
            rows = frame[(frame["file"] == file) & frame["manifest"].isin(manifests)]
            return ",".join(str(s) for s in sorted(set(rows["seed"])))

        what = (
            f"manifest {', '.join(only_a) or '-'} (seed {seeds(file_a, only_a) or '-'}) in {file_a} vs "
            f"{', '.join(only_b) or '-'} (seed {seeds(file_b, only_b) or '-'}) in {file_b}"
        )
        raise UserError(
            f"cannot merge {file_a} and {file_b}: {task} {ways}-way {shots}-shot {queries}-query episodes "
            f"differ ({what}); different seeds or sampler versions draw different episodes, so the "
            "accuracies are not paired; merge files run with the same --seed and version"
        )


def _dedupe(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    dup = frame.duplicated(KEY, keep=False)
    if not dup.any():
        return frame, 0
    repeated = frame[dup].drop_duplicates(KEY + SCORES)
    clash = repeated.duplicated(KEY, keep=False)
    if clash.any():
        a, b = repeated[clash].sort_values(KEY, kind="stable").iloc[:2].to_dict("records")
        raise UserError(
            f"conflicting results for {a['task']} {a['method']} {a['shots']}-shot episode {a['episode']} "
            f"(manifest {a['manifest']}): accuracy {a['accuracy']:.6g} in {a['file']} but "
            f"{b['accuracy']:.6g} in {b['file']}; remove one of them"
        )
    kept = frame.drop_duplicates(KEY, keep="first")
    return kept, len(frame) - len(kept)


def _entries(frame: pd.DataFrame) -> pd.Series:
    """Display name per row: the method label, plus what differs where one label has rows of one task under
    several conditions (long values such as configs and data identities as a short hash)."""
    conditions = list(EPISODES.conditions)
    names = pd.Series(frame["method"].to_numpy(), index=frame.index, dtype=object)
    for (_, method), g in frame.groupby(["task", "method"], sort=False):
        variants = g[conditions].astype(str).drop_duplicates()
        if len(variants) < 2:
            continue
        differ = [c for c in conditions if variants[c].nunique() > 1]

        def show(column, value):
            if column in ("config", "data", "source", "preprocessing") and len(value) > 16:
                return f"{column} {hashlib.sha256(value.encode()).hexdigest()[:6]}"
            return f"{column}={value}"

        labels = (
            g[differ]
            .astype(str)
            .apply(
                lambda r, method=method, differ=differ: f"{method} [" + ", ".join(show(c, r[c]) for c in differ) + "]",
                axis=1,
            )
        )
        names.loc[g.index] = labels
    return names


def load_results(paths: list[str] | None) -> tuple[pd.DataFrame, dict]:
    """Merged, checked, deduplicated rows of the given files (with `file` and `entry` columns) and a summary
    of the merge (files, rows read, duplicates dropped)."""
    files = resolve_paths(paths)
    frames = [_read(p) for p in files]
    frames = [f for f in frames if not f.empty]
    if not frames:
        raise UserError(f"no result rows in {', '.join(map(str, files))}")
    frame = pd.concat(frames, ignore_index=True)
    _check_streams(frame)
    read = len(frame)
    frame, dropped = _dedupe(frame)
    frame = frame.sort_values(KEY, kind="stable").reset_index(drop=True)
    frame["entry"] = _entries(frame)
    return frame, {"files": [str(p) for p in files], "rows": read, "duplicates": dropped}


TRANSDUCTIVE_MARK = " (transductive)"
TRANSDUCTIVE_NOTE = (
    "(transductive): the method also reads the unlabelled features of its episode's query set "
    "(never their labels); the others answer each query alone"
)  # a table caption


def transductive_note(query: str = "its episode's query set") -> str:
    """TRANSDUCTIVE_NOTE as a sentence, the query named as the table's protocol has it."""
    return (
        "(Transductive): the method also reads the unlabelled features of "
        + query
        + " (never their labels); the others answer each query alone."
    )


def marked(name: str, transductive) -> str:
    """A method's name as tables show it: transductive ones carry TRANSDUCTIVE_MARK."""
    return f"{name}{TRANSDUCTIVE_MARK}" if bool(transductive) else name


def inductive_only(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of inductive methods (`bench leaderboard --inductive-only`)."""
    kept = rows[rows["transductive"].astype(int) == 0]
    if kept.empty:
        raise UserError("--inductive-only leaves no rows: every row is of a transductive method")
    return kept.reset_index(drop=True)


def leaderboard(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (task, ways, shots, queries, episode stream, method entry), sorted; see stats.compare_methods.
    `transductive`: whether the entry's rows are a transductive method's."""
    parts = []
    for (task, ways, shots, queries, manifest), g in rows.groupby(STREAM, sort=True):
        table = compare_methods(g, by="entry")
        table["transductive"] = table["entry"].map(g.groupby("entry")["transductive"].max().astype(bool))
        seeds = sorted(set(g["seed"]))
        table.insert(0, "task", task)
        table.insert(1, "ways", int(ways))
        table.insert(2, "shots", int(shots))
        table.insert(3, "queries", int(queries))
        table.insert(4, "seed", ",".join(map(str, seeds)))
        table.insert(5, "manifest", manifest)
        parts.append(table.rename(columns={"entry": "method"}))
    board = pd.concat(parts, ignore_index=True)
    return board


def display_rows(board: pd.DataFrame) -> dict[tuple, tuple[str, list[list[str]]]]:
    """Per stream: (title, rows of text cells in HEADERS order), shared by the terminal, markdown and HTML."""
    out = {}
    for key, g in board.groupby(["task", "ways", "shots", "queries", "seed", "manifest"], sort=False):
        task, ways, shots, queries, seed, manifest = key
        title = f"{task}: {ways}-way {shots}-shot, {queries} queries per class, seed {seed} (episodes {manifest})"
        lines = []
        for i, r in enumerate(g.itertuples(index=False)):
            best = i == 0  # compare_methods puts the best (rank 1, highest mean) first
            lines.append(
                [
                    str(r.rank),
                    marked(r.method, r.transductive),
                    pm(r.accuracy, r.accuracy_ci95),
                    "best" if best else pm(r.delta, r.delta_ci95, signed=True),
                    str(r.paired),
                    pm(r.macro_f1, r.macro_f1_ci95),
                    str(r.episodes),
                ]
            )
        out[key] = (title, lines)
    return out


HEADERS = ["rank", "method", "accuracy %", "Δ vs best %", "pairs", "macro-F1 %", "episodes"]


def rich_tables(board: pd.DataFrame) -> list:
    from rich.table import Table

    tables = []
    for title, lines in display_rows(board).values():
        caption = (
            "mean ± 95% CI over episodes; Δ: mean paired difference to the best on the episodes both "
            "answered (pairs); equal ranks: the paired CI includes 0"
        )
        if any(TRANSDUCTIVE_MARK in line[1] for line in lines):
            caption += "; " + TRANSDUCTIVE_NOTE
        table = Table(title=title, caption=caption)
        for header in HEADERS:
            table.add_column(header, justify="left" if header == "method" else "right")
        for line in lines:
            table.add_row(*line)
        tables.append(table)
    return tables


def print_tables(console, tables) -> None:
    """Print rich tables; into a file or pipe at their natural width (no 80-column wrapping)."""
    from rich.console import Console
    from rich.measure import Measurement

    for table in tables:
        out = console
        if not console.is_terminal:
            width = Measurement.get(console, console.options.update(width=10_000), table).maximum
            out = Console(file=console.file, width=max(console.width, width), color_system=None)
        out.print(table)


def to_markdown(board: pd.DataFrame) -> str:
    parts = []
    for title, lines in display_rows(board).values():
        parts.append(f"### {title}\n")
        parts.append("| " + " | ".join(HEADERS) + " |")
        parts.append("|" + "|".join("---:" if h != "method" else ":---" for h in HEADERS) + "|")
        for line in lines:
            parts.append("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |")
        parts.append("")
    parts.append(
        "Mean ± 95% CI over episodes. Δ: mean paired difference in accuracy to the best method on the "
        "episodes both answered (pairs), ± its 95% CI. Methods whose paired CI includes 0 share a rank."
        + (" " + transductive_note() if board["transductive"].any() else "")
    )
    return "\n".join(parts) + "\n"


def to_summary(board: pd.DataFrame) -> str:
    """Markdown, one table per (task, ways, queries, seed): a row per method, a column per shots, each cell the
    mean accuracy ± 95% CI (episodes); bold where the method shares rank 1 in that column. Methods are ordered by
    their accuracy in the column that most methods answered (the fewest shots on a tie)."""
    parts = []
    for (task, ways, queries, seed), g in board.groupby(["task", "ways", "queries", "seed"], sort=True):
        if g.duplicated(["shots", "method"]).any():
            raise UserError(f"{task}: one (shots, method) in several episode streams; summarize one stream each")
        shots = sorted(g["shots"].unique())
        cells = {(r.method, r.shots): r for r in g.itertuples(index=False)}
        widest = max(shots, key=lambda k: ((g["shots"] == k).sum(), -k))
        at = {r.method: r.accuracy for r in g[g["shots"] == widest].itertuples(index=False)}
        methods = sorted(set(g["method"]), key=lambda m: (-at.get(m, -1.0), m))
        transductive = set(g.loc[g["transductive"], "method"])

        def cell(m, k, cells=cells):
            r = cells.get((m, k))
            if r is None:
                return "–"
            text = f"{pm(r.accuracy, r.accuracy_ci95)} ({r.episodes})"
            return f"**{text}**" if r.rank == 1 else text

        parts.append(
            f"**{task}**: {ways}-way, {queries} queries per class, seed {seed}; accuracy %, mean ± 95% CI (episodes)\n"
        )
        parts.append("| method | " + " | ".join(f"{k}-shot" for k in shots) + " |")
        parts.append("|:---|" + "---:|" * len(shots))
        for m in methods:
            parts.append(f"| {marked(f'`{m}`', m in transductive)} | " + " | ".join(cell(m, k) for k in shots) + " |")
        parts.append("")
    parts.append(
        "Bold: rank 1 in that column (the paired 95% CI of its difference to the best includes 0); –: not run."
        + (" " + transductive_note() if board["transductive"].any() else "")
    )
    return "\n".join(parts) + "\n"


def to_sources(rows: pd.DataFrame, versus: str | None = None) -> str:
    """Markdown: each method at each K with each --source (task `T+SPEC`) beside its rows without one (task T),
    on the same episodes (a source leaves a task's episode stream as it is), with the paired difference to
    the method's no-source rows and, with `versus`, to that method's no-source rows (e.g. sdft-no-step1:
    ImageNet straight to the target)."""
    from benchmark.stats import mean_ci, paired_difference

    rows = rows.copy()
    sources = rows["source"].fillna("").astype(str)
    rows["target"] = [
        t[: len(t) - len(s) - 1] if s and t.endswith("+" + s) else t for t, s in zip(rows["task"], sources)
    ]
    rows["source_name"] = sources.where(sources != "", "none")
    if versus and not rows["entry"].eq(versus).any():
        raise UserError(f"--versus {versus}: no rows of that method in these files")
    parts, titled = [], None
    for (target, ways, queries, shots), g in rows.groupby(["target", "ways", "queries", "shots"], sort=True):
        if g["source_name"].eq("none").sum() == 0:
            continue
        if g["manifest"].nunique() > 1:
            raise UserError(
                f"{target} {shots}-shot: its rows with and without a source come from different "
                f"episode streams; they cannot be paired"
            )
        if titled != (target, ways, queries):  # one table per target task and setting
            titled = (target, ways, queries)
            if parts:
                parts.append("")
            parts.append(
                f"**{target}**: {ways}-way, {queries} queries per class; accuracy %, mean ± 95% CI "
                "(episodes); Δ: paired difference in points on the episodes both answered, ± 95% CI (pairs)\n"
            )
            parts.append(
                "| method | K | source | accuracy % | Δ vs no source | "
                + (f"Δ vs `{versus}` (no source) |" if versus else "").rstrip()
            )
            parts.append("|:---|---:|:---|---:|---:|" + ("---:|" if versus else ""))
        by_episode = {key: part.set_index("episode")["accuracy"] for key, part in g.groupby(["entry", "source_name"])}
        for (entry, source), acc in sorted(by_episode.items(), key=lambda kv: (kv[0][0], kv[0][1] != "none", kv[0][1])):
            mean, half = mean_ci(acc.to_numpy())
            cells = [f"`{entry}`", str(int(shots)), source, f"{pm(mean, half)} ({len(acc)})"]
            for reference in [(entry, "none")] + ([(versus, "none")] if versus else []):
                other = by_episode.get(reference)
                if other is None or reference == (entry, source):
                    cells.append("–")
                    continue
                a, b = acc.align(other, join="inner")
                d, dh, n = paired_difference(a.to_numpy(), b.to_numpy())
                cells.append(f"{pm(d, dh, signed=True)} ({n})")
            parts.append("| " + " | ".join(cells) + " |")
    if not parts:
        raise UserError("no rows with and without a --source on the same task; --format sources compares them")
    return "\n".join(parts) + "\n"


MIN_EPISODES_FOR_BEST = 100  # a method run on fewer episodes is too uncertain to be called the best of its kind


def to_transductive(rows: pd.DataFrame) -> str:
    """Markdown: per task, ways, queries and shots, the best transductive method (highest mean accuracy over at
    least MIN_EPISODES_FOR_BEST episodes) against the best inductive one, as the paired difference on the
    episodes both answered with its 95% CI."""
    from benchmark.stats import mean_ci, paired_difference

    parts = [
        "Best transductive against best inductive method per task and K: accuracy %, mean ± 95% CI "
        "(episodes); Δ = transductive - inductive, paired over the episodes both answered, ± 95% CI (pairs). "
        f"The best of each kind is the highest mean among methods run on at least {MIN_EPISODES_FOR_BEST} "
        "episodes, chosen on these very episodes, so Δ carries that selection.\n",
        "| task | K | best transductive | accuracy % | best inductive | accuracy % | Δ points |",
        "|:---|---:|:---|---:|:---|---:|---:|",
    ]
    found = False
    for (task, ways, shots, queries, _), g in rows.groupby(STREAM, sort=True):
        by_entry = {entry: part.set_index("episode")["accuracy"] for entry, part in g.groupby("entry")}
        kind = g.groupby("entry")["transductive"].max().astype(bool)
        best = {}
        for side in (True, False):
            entries = [e for e in by_entry if kind[e] == side and len(by_entry[e]) >= MIN_EPISODES_FOR_BEST]
            if entries:
                best[side] = max(entries, key=lambda e: (by_entry[e].mean(), e))
        if len(best) < 2:
            continue
        found = True
        a, b = by_entry[best[True]].align(by_entry[best[False]], join="inner")
        d, dh, n = paired_difference(a.to_numpy(), b.to_numpy())
        cells = [f"{task} ({ways}-way, {queries} q)", str(int(shots))]
        for side in (True, False):
            mean, half = mean_ci(by_entry[best[side]].to_numpy())
            cells += [f"`{best[side]}`", f"{pm(mean, half)} ({len(by_entry[best[side]])})"]
        parts.append("| " + " | ".join(cells) + f" | {pm(d, dh, signed=True)} ({n}) |")
    if not found:
        raise UserError("--format transductive needs rows of transductive and inductive methods on the same episodes")
    return "\n".join(parts) + "\n"


def to_csv(board: pd.DataFrame) -> str:
    return board.to_csv(index=False, lineterminator="\n")


def to_json(board: pd.DataFrame) -> str:
    records = json.loads(board.to_json(orient="records", double_precision=15))
    return json.dumps(records, indent=2) + "\n"


FORMATS = {"csv": to_csv, "markdown": to_markdown, "json": to_json, "summary": to_summary}
