"""Published numbers beside ours: Mars-Bench's few-shot weighted F1 (benchmark/reference/) next to marsfsl's
fixed-K rows on the same dataset. Published rows are shown as such, with their source, and never enter a mean,
a rank or a paired comparison."""

from __future__ import annotations

import hashlib
import html
from pathlib import Path

import pandas as pd

from benchmark.stats import pm
from common.errors import UserError

REFERENCE = Path(__file__).parent / "reference" / "marsbench-fewshot.csv"
HEADERS = ["", "method / backbone", "weighted-F1 %", "seeds", "source"]


def published_rows() -> pd.DataFrame:
    return pd.read_csv(REFERENCE, dtype={"shots": int, "seeds": int})


def published_name(task: str) -> str:
    """Mars-Bench's name of the dataset a marsfsl task runs on ('' when it publishes nothing for it). Only sets in
    Mars-Bench's own layout count: the built-in `domars16k` task reads the Zenodo folders, whose split was not
    checked to be the one in Mars-Bench's annotation.csv."""
    if task.startswith("marsbench:"):
        from tasks.datasets.marsbench import published_name as folder_name

        return folder_name(Path(task[len("marsbench:") :].split("+", 1)[0]))
    return ""


# The fixed-K columns `comparison` reads, with their types: read_fixedk types them, but an empty file reads as
# text columns, which would leave them text in the frames' concatenation.
FIXEDK_TYPES = (
    ("shots", int),
    ("seed", int),
    ("accuracy", float),
    ("weighted_f1", float),
    ("seconds", float),
    ("n_train", int),
    ("n_test", int),
)


def comparison(fixedk_paths) -> list[tuple[str, list[list[str]]]]:
    """(title, lines) per (task, shots) of the fixed-K files whose dataset Mars-Bench publishes numbers for:
    marsfsl's rows (mean ± 95% CI over seeds) first, then the published rows, each marked."""
    from benchmark.fixedk import summarize_over_seeds

    rows = read_fixedk_files(fixedk_paths)
    reference = published_rows()
    out = []
    for task, g in rows.groupby("task", sort=True):
        name = published_name(str(task))
        theirs = reference[reference["dataset"] == name] if name else reference.iloc[:0]
        summary = summarize_over_seeds(g.drop(columns=["task"]).assign(method=entries(g)))
        for shots, s in summary.groupby("shots", sort=True):
            at_k = theirs[theirs["shots"] == shots]
            lines = our_lines(s) + published_lines(at_k)
            out.append((f"{task}: fixed-K {shots}-shot, weighted F1{shots_note(name, shots, at_k, s)}", lines))
    return out


def read_fixedk_files(fixedk_paths) -> pd.DataFrame:
    """The rows of every fixed-K file, typed; a one-line refusal for a missing file or no rows at all."""
    from benchmark.fixedk import read_fixedk

    frames = []
    for path in fixedk_paths:
        if not Path(path).exists():
            raise UserError(f"fixed-K results file {path} does not exist")
        frames.append(read_fixedk(Path(path)))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if rows.empty:
        raise UserError("the fixed-K files hold no rows; run `bench fixedk` first")
    for column, kind in FIXEDK_TYPES:
        rows[column] = rows[column].astype(kind)
    return rows


def our_lines(summary: pd.DataFrame) -> list[list[str]]:
    """marsfsl's lines of one (task, shots): one per entry, best weighted F1 first."""
    return [
        [
            "marsfsl",
            r["method"],
            pm(r["weighted_f1"], r["weighted_f1_ci95"], digits=1, undefined="n/a"),
            str(r["seeds"]),
            "this run",
        ]
        for _, r in summary.sort_values("weighted_f1", ascending=False).iterrows()
    ]


def published_lines(at_k: pd.DataFrame) -> list[list[str]]:
    """Mars-Bench's published lines of one (dataset, shots), with their source."""
    return [
        [
            "published",
            f"{r['backbone']} ({r['training']})",
            f"{100 * r['weighted_f1_mean']:.1f}",
            str(r["seeds"]),
            r["source"],
        ]
        for _, r in at_k.iterrows()
    ]


def shots_note(name: str, shots: int, at_k: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The title's ending for one (task, shots): what Mars-Bench publishes for it, and the capped classes."""
    note = (
        f" beside Mars-Bench's published {name}"
        if len(at_k)
        else f" (Mars-Bench publishes no {shots}-shot number for {name})"
        if name
        else " (Mars-Bench publishes no numbers for this dataset)"
    )
    capped = sorted({c for value in summary["capped"] for c in str(value).split("|") if c and c != "nan"})
    if capped:  # such a class trained on fewer than K images: the row is not a plain K-shot number
        note += f"; capped (fewer than {shots} training images, all taken): {', '.join(capped)}"
    return note


def entries(rows: pd.DataFrame) -> pd.Series:
    """`method / backbone @ size px` (transductive methods marked), with a hash where one label ran with several
    configs, draws or backbone weights, so that every entry has one row per seed."""
    from benchmark.leaderboard import TRANSDUCTIVE_MARK

    method = rows["method"].where(rows["transductive"].astype(int) == 0, rows["method"] + TRANSDUCTIVE_MARK)
    label = method + " / " + rows["backbone"].astype(str) + " @ " + rows["image_size"].astype(str) + " px"
    variant = rows["config"].astype(str) + "|" + rows["draw"].astype(str) + "|" + rows["weights"].astype(str)
    several = variant.groupby(label).transform("nunique") > 1
    tag = variant.map(lambda v: " [" + hashlib.sha256(v.encode()).hexdigest()[:6] + "]")
    return label.where(~several, label + tag)


def rich_tables(blocks):
    from rich.table import Table

    tables = []
    for title, lines in blocks:
        table = Table(
            title=title,
            caption="marsfsl: mean ± 95% CI over seeds; published: Mars-Bench's mean, "
            "not part of any marsfsl mean or rank",
        )
        for h in HEADERS:
            table.add_column(h)
        for line in lines:
            table.add_row(*line)
        tables.append(table)
    return tables


def markdown(blocks) -> str:
    parts = []
    for title, lines in blocks:
        parts += [f"### {title}", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        parts += ["| " + " | ".join(line) + " |" for line in lines]
        parts.append("")
    return "\n".join(parts)


def html_section(blocks) -> str:
    tables = []
    for title, lines in blocks:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>" for line in lines)
        tables.append(
            f'<table class="published"><caption>{html.escape(title)}</caption><thead><tr>{head}</tr>'
            f"</thead><tbody>{body}</tbody></table>"
        )
    return (
        '<section><h2>Fixed-K beside published numbers</h2><p class="note">marsfsl rows: mean ± 95% CI over '
        "seeds. Published rows: Mars-Bench's own results (source given), other backbones and training; never "
        f"part of a marsfsl mean or rank.</p>{''.join(tables)}</section>"
    )
