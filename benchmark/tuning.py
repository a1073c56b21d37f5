"""Choosing a method's settings on validation episodes: a grid of options, each point a method spec run by the
harness (benchmark/runner.py) on the same validation episodes, one table, one stated rule.

The episodes come from the task's validation slice (tasks/registry.Task.validation: part of the base pool,
scene- or class-disjoint from what methods pre-train on), never from the target pool: `tune` has no way to
ask for target episodes. The rows land in the validation results file like `bench run --split validation`'s,
so a tuning run resumes, and a grid point already run there (by `bench run` or an earlier grid) is reused.

The rule (CHOICE_RULE): the highest mean accuracy wins, unless the method's default setting cannot be told
apart from it (the 95% CI of their paired difference on the shared episodes includes zero): then the default
stays. A default is only replaced by a setting that is better on these episodes beyond their noise.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark.protocols.episodes import run_benchmark
from benchmark.runner import MethodSpec, RunConfig, _parse_value, file_stem
from benchmark.stats import FIGURES, compare_methods, pm
from common.errors import UserError, closest
from common.files import atomic_write_text
from common.settings import DEFAULTS
from methods.progress import SILENT, Progress
from methods.registry import create_method, method_info, option_names

# what the tuning table says of each candidate besides its options: the figures, and the default and the choice
VERDICT_COLUMNS = (*FIGURES, "default", "chosen")

CHOICE_RULE = (
    "highest mean accuracy; the default setting stays when the 95% CI of its paired difference to "
    "that setting includes zero"
)
VALIDATION = "validation"


@dataclass
class Grid:
    """A method (with fixed options) and, per gridded option, the values to try, in the order given."""

    method: MethodSpec
    axes: list[tuple[str, list]]

    @classmethod
    def parse(cls, method: str, grids: list[str]) -> Grid:
        """`--method NAME[:key=value,...]` and `--grid key=v1,v2,...` (repeated); one-line UserErrors for an
        option the method does not take, an option gridded twice or also fixed in --method, an empty list."""
        spec = MethodSpec.parse(method)
        known = option_names(method_info(spec.name).cls)  # unknown method: one line from the registry
        axes: list[tuple[str, list]] = []
        for text in grids:
            key, sep, values = text.partition("=")
            key = key.strip()
            items = [v.strip() for v in values.split(",") if v.strip()]
            if not sep or not key or not items:
                raise UserError(f"bad --grid {text!r}; use --grid key=value1,value2,...")
            if known is not None and key not in known:
                raise UserError(
                    f"--grid {text}: method {spec.name} has no option {key!r}{closest(key, known)}; its "
                    f"options: {', '.join(known) or 'none'}"
                )
            if key in spec.options or any(key == k for k, _ in axes):
                raise UserError(f"--grid {text}: option {key} is set twice (in --method or another --grid)")
            axes.append((key, [_parse_value(v) for v in items]))
        if not axes:
            raise UserError("bench tune needs at least one --grid key=value1,value2,...")
        return cls(spec, axes)

    def specs(self) -> tuple[list[MethodSpec], MethodSpec]:
        """(every method spec to run, the default's spec among them). Points whose recorded config is the same
        (`knn:k=1` where 1 is k's default) are run once, under the default's own label (`knn`), so that rows an
        earlier tuning run or `bench run --split validation` made of the default are reused, not run again."""
        default = MethodSpec(self.method.name, dict(self.method.options))
        keys = [k for k, _ in self.axes]
        points = [
            MethodSpec(self.method.name, {**self.method.options, **dict(zip(keys, values))})
            for values in itertools.product(*(v for _, v in self.axes))
        ]
        seen: dict[str, MethodSpec] = {}
        for spec in [default] + points:
            config = repr(sorted(create_method(spec.name, **spec.options).config().items()))  # checks each value
            if config not in seen:
                seen[config] = spec
        specs = list(seen.values())
        return specs, default


@dataclass
class TuneConfig:
    method: str
    grids: list[str]
    task: str
    data_dir: Path
    cache_dir: Path | None = None
    shots: int = DEFAULTS.tune_shots
    n_way: int = DEFAULTS.n_way
    n_query: int = DEFAULTS.n_query
    episodes: int = DEFAULTS.tune_episodes
    seed: int = DEFAULTS.seed
    backbone: str | None = None
    image_size: int | None = None
    out: Path | None = None  # the validation results file (default: runs/<task>-validation.csv)
    table: Path | None = None  # the tuning table's CSV (default: runs/<task>-tune-<method>-<K>shot.csv)
    reuse_stale: bool = False

    def run_config(self, specs: list[MethodSpec]) -> RunConfig:
        extra = {k: v for k, v in (("backbone", self.backbone), ("image_size", self.image_size)) if v is not None}
        return RunConfig(
            methods=specs,
            task=self.task,
            shots=[self.shots],
            data_dir=self.data_dir,
            cache_dir=self.cache_dir,
            out=self.out,
            n_way=self.n_way,
            n_query=self.n_query,
            episodes=self.episodes,
            seed=self.seed,
            split=VALIDATION,
            reuse_stale=self.reuse_stale,
            stop_on_failure=True,
            **extra,
        )

    def table_path(self) -> Path:
        if self.table:
            return Path(self.table)
        name = MethodSpec.parse(self.method).name
        return (
            self.run_config([]).results_path().parent / f"{file_stem(self.task)}-tune-{file_stem(name)}-"
            f"{self.shots}shot.csv"
        )


@dataclass
class Tuned:
    table: pd.DataFrame  # one line per setting, best mean first (see tuning_table)
    chosen: MethodSpec
    default: MethodSpec
    results: Path


def tuning_table(
    rows: pd.DataFrame, specs: list[MethodSpec], default: MethodSpec, axes: list[tuple[str, list]]
) -> tuple[pd.DataFrame, MethodSpec]:
    """The table (per setting: its gridded values, episodes, accuracy and CI, macro-F1, paired difference to
    the best with CI and pairs, whether it is the default and the chosen one) and the chosen spec."""
    board = compare_methods(rows, by="method")
    by_label = {s.label: s for s in specs}
    missing = [s.label for s in specs if s.label not in set(board["method"])]
    if missing:
        raise UserError(f"no validation rows for {', '.join(missing)}; rerun the same command")
    board = board.sort_values(["accuracy", "method"], ascending=[False, True], kind="stable").reset_index(drop=True)
    best = board.iloc[0]
    d = board[board["method"] == default.label].iloc[0]
    tied = math.isnan(d["delta_ci95"]) or d["delta"] + d["delta_ci95"] >= 0
    chosen = default if tied else by_label[best["method"]]
    for key, _ in axes:
        board[key] = [by_label[m].options.get(key, "default") for m in board["method"]]
    board["default"] = board["method"] == default.label
    board["chosen"] = board["method"] == chosen.label
    return board[["method", *(k for k, _ in axes), *VERDICT_COLUMNS]], chosen


def tune(config: TuneConfig, progress: Progress = SILENT) -> Tuned:
    """Run (or resume) every grid point on the same validation episodes; the table (also written to
    config.table_path()) and the chosen setting by CHOICE_RULE."""
    grid = Grid.parse(config.method, config.grids)
    specs, default = grid.specs()
    run = config.run_config(specs)
    rows = run_benchmark(run, progress)
    table, chosen = tuning_table(rows, specs, default, grid.axes)
    path = config.table_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    written = table.assign(
        task=f"{config.task}@{VALIDATION}",
        shots=config.shots,
        ways=config.n_way,
        queries=config.n_query,
        seed=config.seed,
        rule=CHOICE_RULE,
    )
    try:
        atomic_write_text(path, written.to_csv(index=False))
    except OSError as exc:
        raise UserError(f"cannot write the tuning table {path} ({exc.strerror}); choose another with --table") from None
    return Tuned(table, chosen, default, run.results_path())


def option_string(spec: MethodSpec) -> str:
    """`--method NAME:key=value,...` as a user types it."""
    return f"--method {spec.label}"


def table_lines(table: pd.DataFrame, axes: list[str]) -> list[list[str]]:
    """The table's cells as text: the setting, accuracy and paired difference as mean ± 95% CI (in %)."""
    lines = []
    for _, r in table.iterrows():
        setting = ", ".join(f"{k}={r[k]}" for k in axes)
        best = r["delta"] == 0 and math.isnan(r["delta_ci95"])
        delta = "best" if best else pm(r["delta"], r["delta_ci95"], signed=True)
        mark = ", ".join(m for m, on in (("chosen", r["chosen"]), ("default", r["default"])) if on)
        lines.append(
            [
                setting,
                pm(r["accuracy"], r["accuracy_ci95"]),
                str(int(r["episodes"])),
                delta,
                str(int(r["paired"])),
                pm(r["macro_f1"], r["macro_f1_ci95"]),
                mark,
            ]
        )
    return lines
