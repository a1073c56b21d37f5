"""Rich progress bars and tables for the terminal."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from benchmark.stats import pm
from methods.progress import Progress

console = Console(stderr=True)
stdout = Console()


class RichProgressReporter(Progress):
    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    @contextmanager
    def bar(self, description: str, total: int):
        if not self.enabled:
            yield lambda n=1: None
            return
        with RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            handle = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(handle, n)

    def log(self, message: str) -> None:  # status lines print even without bars (--quiet)
        console.print(f"[dim]{message}[/dim]", highlight=False)


def results_tables(summary: pd.DataFrame, notes=()) -> list[Table]:
    """A table per (task, shots, ways); `notes`: lines about the task's data for each table's caption."""
    from benchmark.leaderboard import TRANSDUCTIVE_NOTE, marked

    tables = []
    for (task, shots, ways), g in summary.groupby(["task", "shots", "ways"], sort=True):
        transductive = g["transductive"].astype(bool) if "transductive" in g else pd.Series(False, index=g.index)
        caption = [*notes, *([TRANSDUCTIVE_NOTE] if transductive.any() else [])]
        table = Table(
            title=f"{task}: {ways}-way {shots}-shot (mean ± 95% CI over episodes)", caption="; ".join(caption) or None
        )
        for column, justify in (
            ("method", "left"),
            ("accuracy %", "right"),
            ("macro-F1 %", "right"),
            ("episodes", "right"),
            ("seconds", "right"),
        ):
            table.add_column(column, justify=justify)
        for i, r in g.sort_values("accuracy", ascending=False).iterrows():
            table.add_row(
                marked(r["method"], transductive[i]),
                pm(r["accuracy"], r["accuracy_ci95"]),
                pm(r["macro_f1"], r["macro_f1_ci95"]),
                str(r["episodes"]),
                f"{r['seconds']:.1f}",
            )
        tables.append(table)
    return tables


def finish(results: Path, started: float, failures: list) -> int:
    """The end of `bench run` / `bench fixedk`: where the rows are, then one line per method that failed; the
    exit status (FAILED when a method failed)."""
    import sys
    import time

    from benchmark.cli import FAILED

    if results.exists():
        console.print(f"results: {results}  ({time.perf_counter() - started:.1f} s)", highlight=False)
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return FAILED if failures else 0
