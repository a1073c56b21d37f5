"""Rich progress bars and tables for the terminal."""
from __future__ import annotations

from contextlib import contextmanager

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn
from rich.table import Table

from benchmark.stats import mean_ci
from methods.progress import Progress

console = Console(stderr=True)
stdout = Console()


class RichProgressReporter(Progress):
    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    @contextmanager
    def task(self, description: str, total: int):
        if not self.enabled:
            yield lambda n=1: None
            return
        with RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          TimeRemainingColumn(), console=console, transient=True) as bar:
            handle = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(handle, n)

    def log(self, message: str) -> None:  # status lines print even without bars (--quiet)
        console.print(f"[dim]{message}[/dim]", highlight=False)


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (task, shots, method): mean accuracy and macro-F1 with 95% CI, episodes, seconds."""
    records = []
    for (task, shots, ways, method), g in rows.groupby(["task", "shots", "ways", "method"], sort=True):
        acc, acc_ci = mean_ci(g["accuracy"])
        f1, f1_ci = mean_ci(g["macro_f1"])
        records.append({"task": task, "shots": int(shots), "ways": int(ways), "method": method,
                        "accuracy": acc, "accuracy_ci95": acc_ci, "macro_f1": f1, "macro_f1_ci95": f1_ci,
                        "episodes": len(g), "seconds": float(g["seconds"].sum())})
    return pd.DataFrame(records)


def results_tables(summary: pd.DataFrame) -> list[Table]:
    tables = []
    for (task, shots, ways), g in summary.groupby(["task", "shots", "ways"], sort=True):
        table = Table(title=f"{task}: {ways}-way {shots}-shot (mean ± 95% CI over episodes)")
        for column, justify in (("method", "left"), ("accuracy %", "right"), ("macro-F1 %", "right"),
                                ("episodes", "right"), ("seconds", "right")):
            table.add_column(column, justify=justify)
        for _, r in g.sort_values("accuracy", ascending=False).iterrows():
            table.add_row(r["method"], f"{100 * r['accuracy']:.2f} ± {100 * r['accuracy_ci95']:.2f}",
                          f"{100 * r['macro_f1']:.2f} ± {100 * r['macro_f1_ci95']:.2f}", str(r["episodes"]),
                          f"{r['seconds']:.1f}")
        tables.append(table)
    return tables
