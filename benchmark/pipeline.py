"""One experiment loop for every protocol (episodes, fixed-K, crater maps: benchmark/protocols/).

`run(protocol)` is the skeleton they share:

1. the protocol sets up (loads the task, creates the methods, checks what it asks for and the results file)
   before any work;
2. each (method, measurement) is a `Plan`: its key (what was asked, and the conditions it is made under:
   benchmark/provenance.py) and the units (episodes, seeds) it wants;
3. the `ResultsTable` plans them against the file: with --fresh their rows are set aside first; rows of the
   same measurement under other conditions, or (unless --reuse-stale) from other code, are refused in one
   line; the rest are taken as done, so that a run resumes where it stopped;
4. method by method, the protocol prepares it and runs its pending units, appending rows under the file's
   lock; a method's failure (MethodFailed, benchmark.runner.blamed) is that method's: with a `failures`
   list it goes there and the other methods still run (else, or with stop_on_failure, it ends the run);
5. the table is read again and the rows of this run's plans come back.

A protocol says only what is particular to it: its schema, its plans, how a method's units are run and
scored, and what its rows note (see `Protocol`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark.provenance import Provenance
from benchmark.results import (
    Schema,
    append_rows,
    locked_if_present,
    matching,
    read_results,
    reusable_units,
    set_aside,
    set_aside_path,
)
from benchmark.scoring import MethodFailed
from methods.progress import SILENT, Progress


@dataclass
class Plan:
    """One measurement of one method: `measurement` (what was asked: task, method, shots, ...) and `conditions`
    (what else determines its rows), the `units` it wants (episodes, seeds) and those the file holds already."""

    spec: object  # runner.MethodSpec; one object for all of a method's plans (the loop runs them together)
    method: object
    measurement: dict
    conditions: dict
    units: list[int]
    what: str  # names the measurement in a message ("protonet 5-shot")
    done: frozenset = frozenset()

    @property
    def key(self) -> dict:
        return {**self.measurement, **self.conditions}

    @property
    def k(self) -> int:
        return self.measurement["shots"]

    @property
    def pending(self) -> list[int]:
        return [u for u in self.units if u not in self.done]


class ResultsTable:
    """A results file of one schema as the pipeline uses it: planned against (set aside, refuse, resume),
    appended to under its lock, read again. Built on benchmark/results.py (each protocol's setup checks the
    file before any work: results.check_results_path)."""

    def __init__(self, path: Path, schema: Schema):
        self.path, self.schema = Path(path), schema

    def set_aside(self, measurements: list[dict]) -> int:
        """Move the file's rows of these measurements (under any conditions) aside; how many moved."""
        return set_aside(self.path, self.schema, measurements)

    def read(self) -> pd.DataFrame:
        with locked_if_present(self.path):
            return read_results(self.path, self.schema)

    def plan(self, plans: list[Plan], commit: str, reuse_stale: bool) -> list[Plan]:
        """The plans with `done`: the units of their key that the file holds (results.reusable_units, which
        refuses rows of other conditions or other code in one line)."""
        frame = self.read()
        for p in plans:
            p.done = frozenset(
                reusable_units(frame, self.schema, p.measurement, p.conditions, commit, self.path, p.what, reuse_stale)
                & set(p.units)
            )
        return plans

    def append(self, rows: list[dict]) -> None:
        append_rows(self.path, rows, self.schema)

    def rows_of(self, wanted: list[tuple[dict, list[int]]]) -> pd.DataFrame:
        """The file's rows of the (key, units) in `wanted`, in file order."""
        frame = read_results(self.path, self.schema)
        keep = pd.Series(False, index=frame.index)
        units = frame[self.schema.unit].astype(int)
        for key, among in wanted:
            keep |= matching(frame, key) & units.isin(among)
        return frame[keep].reset_index(drop=True)


@dataclass
class Run:
    """What a protocol's units run with: the table its rows go to, the run's provenance, the progress reporter
    and the executor that answers (None: this process; benchmark/executors.py, benchmark/sandbox.py)."""

    table: ResultsTable
    provenance: Provenance
    progress: Progress
    executor: object = None


class Protocol:
    """What a protocol says; `run` does the rest. Subclasses set `schema` and implement the methods below.
    `config`: its settings (runner.BenchConfig or a subclass); the pipeline reads fresh, reuse_stale and
    stop_on_failure from it."""

    schema: Schema
    fresh_what = ""  # inserted into the --fresh note after "moved N rows"

    def __init__(self, config):
        self.config = config

    def setup(self, progress: Progress) -> Path:
        """Load the task, create the methods and check everything asked for before any work; the results path."""
        raise NotImplementedError

    def plans(self) -> list[Plan]:
        """Every (method, measurement) of the run, method by method in command-line order."""
        raise NotImplementedError

    def executor(self, progress: Progress):
        """Who answers the units (None: this process)."""
        return None

    def run_method(self, plans: list[Plan], run: Run) -> None:
        """Prepare the plans' method and run, score and append (run.table.append) their pending units."""
        raise NotImplementedError

    def finish(self, rows: pd.DataFrame) -> pd.DataFrame:
        """This run's rows as the command gets them (notes for the tables' header, ...)."""
        return rows


def plan_against(table: ResultsTable, protocol: Protocol, provenance: Provenance, progress: Progress) -> list[Plan]:
    """The protocol's plans, planned against the table (after setting their rows aside with --fresh)."""
    plans = protocol.plans()
    if protocol.config.fresh:  # never delete results: the rows this run recomputes move aside
        moved = table.set_aside([p.measurement for p in plans])
        if moved:
            progress.log(
                f"--fresh: moved {moved} rows{protocol.fresh_what} from {table.path} to {set_aside_path(table.path)}"
            )
    return table.plan(plans, provenance.commit, protocol.config.reuse_stale)


def run(protocol: Protocol, progress: Progress = SILENT, failures: list | None = None) -> pd.DataFrame:
    """Run (or resume) every method of `protocol`; returns the rows of this run's plans. A failing method
    raises MethodFailed, or with a `failures` list (and not stop_on_failure) is appended there while the
    other methods run. The digests of the task's files are kept in the run's cache folder, as `bench` does
    (benchmark/session.py), for a library caller too."""
    from benchmark.session import digests_in

    cache_dir = getattr(protocol.config, "cache_dir", None)
    with digests_in(Path(cache_dir) / "digests") if cache_dir else contextlib.nullcontext():
        return _run(protocol, progress, failures)


def _run(protocol: Protocol, progress: Progress, failures: list | None) -> pd.DataFrame:
    table = ResultsTable(protocol.setup(progress), protocol.schema)
    provenance = Provenance.current()
    plans = plan_against(table, protocol, provenance, progress)
    wanted = [(p.key, p.units) for p in plans]  # not the plans: they hold the methods, which go one by one
    executor = protocol.executor(progress)
    state = Run(table, provenance, progress, executor)
    while plans:  # each method's prepared state (images, activations, models) goes before the next prepares
        mine = [p for p in plans if p.spec is plans[0].spec]
        plans = [p for p in plans if p.spec is not plans[0].spec]
        try:
            protocol.run_method(mine, state)
        except MethodFailed as failure:
            if failures is None or protocol.config.stop_on_failure:
                raise
            failures.append(failure)
            progress.log(f"{failure.label} failed (the error follows at the end); the other methods go on")
        del mine
    if executor is not None:
        progress.log(executor.summary())
    return protocol.finish(table.rows_of(wanted))
