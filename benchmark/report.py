"""A report from merged results: accuracy-versus-shots plots with CI bands, per-class accuracy heat maps
(matplotlib PNGs) and one self-contained report.html (tables and images inlined) that opens without a server."""

from __future__ import annotations

import base64
import html
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.leaderboard import HEADERS, display_rows, leaderboard, marked
from benchmark.stats import class_accuracy, mean_ci, pm
from common.errors import UserError
from common.files import atomic_output, atomic_write_text

# A report page per task setting: the same task, ways, queries and seed at every shots value.
FAMILY = ["task", "ways", "queries", "seed"]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower() or "task"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: Path) -> None:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})


def _colors(names: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def plot_accuracy_vs_shots(rows: pd.DataFrame, title: str, path: Path):
    """One line per method entry: mean accuracy over episodes at each shots value, with its 95% CI as a band.
    The y axis spans the means (within 0-100 %), not the bands: a cell of two or three episodes has a CI
    wider than the whole scale, and would flatten every other line. Returns the matplotlib figure."""
    names = sorted(rows["entry"].unique())
    colors = _colors(names)
    fig = _figure(8.5, 4.5)
    ax = fig.add_subplot()
    means = []
    for name in names:
        g = rows[rows["entry"] == name]
        shots = sorted(g["shots"].unique())
        stats = [mean_ci(g.loc[g["shots"] == k, "accuracy"]) for k in shots]
        mean = np.array([m for m, _ in stats]) * 100
        half = np.nan_to_num(np.array([h for _, h in stats]) * 100)
        means += list(mean)
        # a transductive method (it also reads its episode's unlabelled query) is marked in the legend and dashed
        transductive = "transductive" in g and bool(g["transductive"].astype(int).max())
        ax.plot(
            shots,
            mean,
            marker="o",
            color=colors[name],
            label=_plain(marked(name, transductive)),
            linestyle="--" if transductive else "-",
        )
        ax.fill_between(shots, mean - half, mean + half, color=colors[name], alpha=0.2, linewidth=0)
        if len(shots) == 1:  # a band needs two points: show the interval as an error bar
            ax.errorbar(shots, mean, yerr=half, color=colors[name], capsize=4)
    all_shots = sorted(rows["shots"].unique())
    ax.set_xscale("log")
    ax.set_xticks(all_shots, [str(k) for k in all_shots])
    ax.minorticks_off()
    ax.set_xlabel("shots (labelled examples per class)")
    ax.set_ylabel("accuracy % (mean, 95% CI band)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.set_ylim(max(0.0, min(means) - 5), min(100.0, max(means) + 5))
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the lines, never over them
    _save(fig, path)
    return fig


def plot_class_heatmap(per_class: dict[int, pd.DataFrame], title: str, path: Path) -> None:
    """Methods x classes of mean per-class accuracy, one panel per shots value, one colour scale."""
    shots = sorted(per_class)
    methods = sorted(set().union(*(set(t["entry"]) for t in per_class.values())))
    classes = sorted(set().union(*(set(t["class"]) for t in per_class.values())))
    fig = _figure(max(6.0, 1.0 + 0.75 * len(classes)), 0.9 + len(shots) * (0.6 + 0.35 * len(methods)))
    axes = fig.subplots(len(shots), 1, squeeze=False)[:, 0]
    image = None
    for ax, k in zip(axes, shots):
        t = (
            per_class[k]
            .pivot(index="entry", columns="class", values="accuracy")
            .reindex(index=methods, columns=classes)
        )
        values = t.to_numpy(dtype=float) * 100
        image = ax.imshow(np.ma.masked_invalid(values), vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(classes)), [_plain(c) for c in classes], rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(methods)), [_plain(m) for m in methods], fontsize=8)
        ax.set_title(f"{k}-shot", fontsize=9)
        if len(classes) * len(methods) <= 400:
            for (i, j), v in np.ndenumerate(values):
                if not math.isnan(v):
                    ax.text(
                        j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="black" if v > 60 else "white"
                    )
    fig.colorbar(image, ax=list(axes), label="per-class accuracy % (mean over episodes)", shrink=0.8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def _plain(text: str) -> str:
    """A label as matplotlib shows it literally: `$` would start math mode (a class may be named anything)."""
    return str(text).replace("$", r"\$")


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _table(title: str, lines: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>" for line in lines)
    return (
        f'<table class="leaderboard"><caption>{html.escape(title)}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _class_table(per_class: dict[int, pd.DataFrame]) -> str:
    parts = []
    for k in sorted(per_class):
        t = per_class[k]
        classes = sorted(t["class"].unique())
        head = "<th>method</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in classes)
        body = []
        for entry, g in t.groupby("entry", sort=True):
            cells = g.set_index("class")
            row = "".join(
                f"<td>{pm(cells.at[c, 'accuracy'], cells.at[c, 'ci95'], digits=1)}</td>"
                if c in cells.index
                else "<td>–</td>"
                for c in classes
            )
            body.append(f"<tr><td>{html.escape(entry)}</td>{row}</tr>")
        parts.append(
            f'<table class="per-class"><caption>per-class accuracy %, {k}-shot (mean ± 95% CI over the '
            f"episodes that include the class)</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>"
        )
    return "".join(parts)


CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
caption { text-align: left; font-weight: 600; padding: .3em 0; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
td:nth-child(2), th:nth-child(2) { text-align: left; }
table.per-class td:first-child, table.per-class th:first-child { text-align: left; }
thead { background: #f3f3f3; }
figure { margin: 1em 0; } img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
.note { color: #555; font-size: .9em; }
"""


def write_report(rows: pd.DataFrame, merged: dict, out_dir: Path, extra_html: str = "") -> list[Path]:
    """Write the PNGs and report.html into out_dir; returns the paths written (report.html last)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create report folder {out_dir} ({exc.strerror}); choose another with --out") from None
    if not out_dir.is_dir():
        raise UserError(f"report path {out_dir} is not a folder; choose another with --out")
    board = leaderboard(rows)
    tables = display_rows(board)
    written, sections = [], []
    for family, g in rows.groupby(FAMILY, sort=True):
        task, ways, queries, seed = family
        name = f"{slug(task)}-{ways}w{queries}q-seed{seed}"
        heading = f"{task}: {ways}-way, {queries} queries per class, seed {seed}"
        curve = out_dir / f"accuracy-vs-shots-{name}.png"
        plot_accuracy_vs_shots(g, f"{task}: {ways}-way accuracy vs shots (seed {seed})", curve)
        per_class = {int(k): class_accuracy(gk, by="entry") for k, gk in g.groupby("shots", sort=True)}
        heat = out_dir / f"class-accuracy-{name}.png"
        plot_class_heatmap(per_class, f"{task}: per-class accuracy ({ways}-way, seed {seed})", heat)
        written += [curve, heat]
        parts = [
            f"<section><h2>{html.escape(heading)}</h2>",
            _img(curve, f"Accuracy versus shots, {heading}: mean over episodes with 95% CI bands"),
        ]
        for key, (title, lines) in tables.items():
            if (key[0], key[1], key[3], key[4]) == (task, ways, queries, str(seed)):
                parts.append(_table(title, lines))
        parts.append(_img(heat, f"Per-class accuracy, {heading}"))
        parts.append(_class_table(per_class))
        parts.append("</section>")
        sections.append("".join(parts))
    commits = sorted(set(rows["git_commit"].astype(str)))
    versions = sorted(set(rows["versions"].astype(str)))
    sources = "".join(f"<li><code>{html.escape(f)}</code></li>" for f in merged["files"])
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>marsfsl report</title>
<style>{CSS}</style></head><body>
<h1>marsfsl benchmark report</h1>
<p class="note">Accuracy is the mean over episodes with its 95% confidence interval (t-based). All methods of a
table answered the same episodes; Δ is the mean paired difference in accuracy to the best method on the episodes
both answered (their number: pairs), with its 95% CI. Methods whose paired CI includes zero share a rank.</p>
<p class="note">{len(rows)} episode rows from {len(merged["files"])} file(s){f", {merged['duplicates']} duplicate rows dropped" if merged["duplicates"] else ""};
git commits: {html.escape(", ".join(commits))}; versions: {html.escape("; ".join(versions))};
written {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}.</p>
<ul class="sources">{sources}</ul>
{"".join(sections)}
{extra_html}
</body></html>
"""
    report = out_dir / "report.html"
    atomic_write_text(report, page)
    return written + [report]
