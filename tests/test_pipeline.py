"""benchmark/pipeline.run with a protocol of its own (no task, no data): the loop every protocol shares plans
against the results file, resumes, refuses or sets aside rows of other conditions or code, appends, re-reads,
and owns the failure policy."""

import csv
from types import SimpleNamespace

import pytest

import benchmark.provenance
from benchmark.pipeline import Plan, Protocol, ResultsTable, run
from benchmark.results import Schema, check_results_path, set_aside_path
from benchmark.runner import MethodSpec, blamed
from benchmark.scoring import MethodFailed
from common.errors import UserError

TOY = Schema(
    name="toy results",
    version=1,
    columns=("schema", "task", "method", "config", "shots", "seed", "score", "seconds", "git_commit", "versions"),
    measurement=("task", "method", "shots"),
    conditions=("config",),
    unit="seed",
    unit_fractions=("score",),
    counts={"shots": 1, "seed": 0},
    outcome=("score",),
)


class Toy(Protocol):
    """A unit is a seed; its score is a function of (method, shots, seed); methods named in `fail` raise."""

    schema = TOY

    def __init__(self, out, methods=("a", "b"), shots=(1, 2), seeds=(0, 1, 2), config="c0", fail=(), **flags):
        super().__init__(SimpleNamespace(**{"fresh": False, "reuse_stale": False, "stop_on_failure": False, **flags}))
        self.out, self.names, self.shots, self.seeds = out, methods, shots, seeds
        self.condition, self.fail = config, fail
        self.ran = []  # (method, shots, pending seeds) as run_method saw them

    def setup(self, progress):
        check_results_path(self.out, TOY)
        return self.out

    def plans(self):  # one spec per method: the pipeline runs a method's plans together
        return [
            Plan(
                spec,
                object(),
                {"task": "toy", "method": spec.label, "shots": k},
                {"config": self.condition},
                list(self.seeds),
                f"{spec.label} {k}-shot",
            )
            for spec in map(MethodSpec, self.names)
            for k in self.shots
        ]

    def run_method(self, plans, run):
        for plan in plans:
            self.ran.append((plan.spec.label, plan.k, plan.pending))
            for seed in plan.pending:
                if plan.spec.name in self.fail:
                    with blamed(plan.spec.label, "fit", f" on seed {seed}"):
                        raise ValueError("boom")
                run.table.append(
                    [
                        {
                            "schema": 1,
                            **plan.key,
                            "seed": seed,
                            "score": (seed + plan.k) / 10,
                            "seconds": 0.0,
                            **run.provenance.columns(),
                        }
                    ]
                )

    def finish(self, rows):
        rows.attrs["notes"] = ["toy"]
        return rows


def rows_in(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_run_appends_rows_and_a_rerun_resumes_with_the_missing_units(tmp_path):
    out = tmp_path / "toy.csv"
    first = Toy(out)
    rows = run(first)
    assert len(rows) == 2 * 2 * 3 and rows.attrs["notes"] == ["toy"]
    assert first.ran == [("a", 1, [0, 1, 2]), ("a", 2, [0, 1, 2]), ("b", 1, [0, 1, 2]), ("b", 2, [0, 1, 2])]
    longer = Toy(out, seeds=(0, 1, 2, 3))
    rows = run(longer)
    assert [pending for *_, pending in longer.ran] == [[3]] * 4
    assert len(rows) == 16 and len(rows_in(out)) == 16
    fewer = Toy(out, seeds=(1,), methods=("b",))
    rows = run(fewer)  # only the rows asked for come back, though the file holds more
    assert fewer.ran == [("b", 1, []), ("b", 2, [])]
    assert sorted(zip(rows["method"], rows["shots"], rows["seed"])) == [("b", 1, 1), ("b", 2, 1)]


def test_a_method_failure_is_that_methods_and_the_others_still_run(tmp_path):
    failures = []
    rows = run(Toy(tmp_path / "toy.csv", fail=("a",)), failures=failures)
    assert [f.label for f in failures] == ["a"] and "fit on seed 0" in str(failures[0])
    assert set(rows["method"]) == {"b"} and len(rows) == 6
    with pytest.raises(MethodFailed):  # without a failures list, the failure ends the run
        run(Toy(tmp_path / "none.csv", fail=("a",)))
    assert not (tmp_path / "none.csv").exists()
    stopping = Toy(tmp_path / "stop.csv", fail=("a",), stop_on_failure=True)
    with pytest.raises(MethodFailed):
        run(stopping, failures=[])
    assert [m for m, *_ in stopping.ran] == ["a"]


def test_rows_of_other_conditions_are_refused_and_fresh_sets_them_aside(tmp_path):
    out = tmp_path / "toy.csv"
    run(Toy(out))
    before = out.read_bytes()
    with pytest.raises(UserError, match="3 rows of a 1-shot .* made with method config c0, this run uses c1.*--fresh"):
        run(Toy(out, config="c1"))
    assert out.read_bytes() == before
    rows = run(Toy(out, config="c1", methods=("a",), fresh=True))
    assert set(rows["config"]) == {"c1"} and len(rows) == 6
    aside = rows_in(set_aside_path(out))
    assert len(aside) == 6 and {r["config"] for r in aside} == {"c0"} and {r["method"] for r in aside} == {"a"}
    assert {r["config"] for r in rows_in(out) if r["method"] == "b"} == {"c0"}


def test_rows_of_other_code_are_refused_unless_reuse_stale(tmp_path, monkeypatch):
    out = tmp_path / "toy.csv"
    run(Toy(out))
    monkeypatch.setattr(benchmark.provenance, "git_commit", lambda: "0123456789ab")
    with pytest.raises(UserError, match="other code.*--reuse-stale"):
        run(Toy(out))
    again = Toy(out, reuse_stale=True)
    assert len(run(again)) == 12 and all(not pending for *_, pending in again.ran)


def test_the_table_reads_back_only_the_asked_keys_and_units(tmp_path):
    out = tmp_path / "toy.csv"
    run(Toy(out, seeds=(0, 1, 2, 3)))
    table = ResultsTable(out, TOY)
    key = {"task": "toy", "method": "b", "shots": 2, "config": "c0"}
    rows = table.rows_of([(key, [1, 3])])
    assert list(rows["seed"]) == [1, 3] and set(rows["method"]) == {"b"}
