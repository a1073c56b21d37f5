"""`bench fixedk` on a tiny generated DoMars16k (official train/test splits): rows, table, resume, one-line errors."""

import csv
import itertools
import json

import pytest
from fakes import domars16k_like

import benchmark.fixedk
from benchmark.cli import main
from benchmark.fixedk import FixedKConfig, run_fixed_k
from benchmark.results import COLUMNS as RUN_COLUMNS
from benchmark.stats import mean_ci
from methods.cache import Cache
from methods.registry import create_method
from tasks.protocols import PROTOCOL_VERSION
from tasks.registry import load_task

METHODS = ["protonet", "simpleshot"]
SHOTS = [1, 2]
SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """Data (4 products x 2 tiles = 8 training images per class) and a feature cache shared by the tests."""
    root = tmp_path_factory.mktemp("fixedk")
    return domars16k_like(root / "data", products=4, per_product=2), root / "cache"


def bench_fixedk(dirs, out, *extra, methods=METHODS, shots="1,2", seeds="0-2"):
    data, cache = dirs
    args = [
        *"fixedk --task domars16k --data-dir".split(),
        str(data),
        "--cache-dir",
        str(cache),
        "--image-size",
        "32",
        "--shots",
        shots,
        "--seeds",
        seeds,
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]
    for m in methods:
        args += ["--method", m]
    return main(args)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def table_rows(out: str) -> dict[str, list[list[str]]]:
    """Printed table rows per title line ('... fixed-K 1-shot ...'), each row as its stripped cells."""
    tables, title = {}, None
    for line in out.splitlines():
        if "fixed-K" in line:
            title = line.strip()
            tables[title] = []
        elif line.startswith("│"):
            tables[title].append([cell.strip() for cell in line.strip("│").split("│")])
    return tables


def test_writes_one_row_per_method_shots_seed_and_prints_a_table_per_shots(dirs, tmp_path, capsys):
    out = tmp_path / "fk.csv"
    assert bench_fixedk(dirs, out) == 0
    printed = capsys.readouterr().out

    rows = read_rows(out)
    assert len(rows) == len(METHODS) * len(SHOTS) * len(SEEDS)
    assert {(r["method"], int(r["shots"]), int(r["seed"])) for r in rows} == set(
        itertools.product(METHODS, SHOTS, SEEDS)
    )
    for r in rows:
        assert int(r["protocol"]) == PROTOCOL_VERSION and r["task"] == "domars16k"
        assert json.loads(r["config"]) == create_method(r["method"]).config()
        assert r["backbone"] == "efficientnet_lite0" and r["image_size"] == "32"
        assert r["git_commit"] and "torch=" in r["versions"] and r["timestamp"]
        assert int(r["n_train"]) == 3 * int(r["shots"]) and int(r["n_test"]) == 3 * 4 * 2

    tables = table_rows(printed)
    assert [title.split(": ")[1].split(",")[0] for title in tables] == ["fixed-K 1-shot", "fixed-K 2-shot"]
    for title, lines in tables.items():
        shots = int(title.split("fixed-K ")[1].split("-shot")[0])
        assert sorted(line[0] for line in lines) == METHODS
        for method, accuracy, f1, n_seeds, _seconds in lines:
            mine = [r for r in rows if r["method"] == method and int(r["shots"]) == shots]
            acc, acc_ci = mean_ci([float(r["accuracy"]) for r in mine])
            wf1, wf1_ci = mean_ci([float(r["weighted_f1"]) for r in mine])
            assert accuracy == f"{100 * acc:.2f} ± {100 * acc_ci:.2f}"
            assert f1 == f"{100 * wf1:.2f} ± {100 * wf1_ci:.2f}"
            assert n_seeds == str(len(SEEDS))


def test_csv_numbers_equal_run_fixed_k(dirs, tmp_path):
    out = tmp_path / "fk.csv"
    assert bench_fixedk(dirs, out) == 0
    rows = read_rows(out)
    data, cache = dirs
    task = load_task("domars16k", data)
    for method, k in itertools.product(METHODS, SHOTS):
        direct = run_fixed_k(
            task, create_method(method), k, SEEDS, Cache(cache), FixedKConfig(methods=[], image_size=32)
        )
        written = sorted(
            (r for r in rows if r["method"] == method and int(r["shots"]) == k), key=lambda r: int(r["seed"])
        )
        assert [int(r["seed"]) for r in written] == [d["seed"] for d in direct]
        for r, d in zip(written, direct):
            for column in ("accuracy", "weighted_f1", "macro_f1"):
                assert float(r[column]) == d[column], (method, k, r["seed"], column)
            assert (int(r["n_train"]), int(r["n_test"])) == (d["n_train"], d["n_test"])
    one_shot = [float(r["weighted_f1"]) for r in rows if r["method"] == "protonet" and r["shots"] == "1"]
    assert len(set(one_shot)) > 1  # the seeds draw different training sets, so a mix-up of seeds would show


def test_rerun_adds_no_rows_and_prints_the_same_table(dirs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "fk.csv"
    assert bench_fixedk(dirs, out) == 0
    first_table, first_file = capsys.readouterr().out, out.read_text()
    calls = []
    real = benchmark.fixedk.run_fixed_k
    monkeypatch.setattr(
        benchmark.fixedk,
        "run_fixed_k",
        lambda task, method, k, seeds, *a, **kw: (
            calls.append((method.name, k, list(seeds))) or real(task, method, k, seeds, *a, **kw)
        ),
    )

    assert bench_fixedk(dirs, out) == 0
    assert calls == []
    assert out.read_text() == first_file
    assert capsys.readouterr().out == first_table


def test_an_interrupted_run_continues_with_the_missing_seeds(dirs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "fk.csv"
    assert bench_fixedk(dirs, out) == 0
    complete = read_rows(out)
    lines = out.read_text().splitlines(keepends=True)
    # as if killed after protonet 1-shot seeds 0 and 1, in the middle of writing seed 2's row
    out.write_text("".join(lines[:3]) + lines[3][:20])
    calls = []
    real = benchmark.fixedk.run_fixed_k
    monkeypatch.setattr(
        benchmark.fixedk,
        "run_fixed_k",
        lambda task, method, k, seeds, *a, **kw: (
            calls.append((method.name, k, list(seeds))) or real(task, method, k, seeds, *a, **kw)
        ),
    )

    assert bench_fixedk(dirs, out) == 0
    assert calls[0] == ("protonet", 1, [2]) and len(calls) == len(METHODS) * len(SHOTS)
    resumed = read_rows(out)
    scores = [*"method shots seed accuracy weighted_f1 macro_f1".split()]
    assert sorted(tuple(r[c] for c in scores) for r in resumed) == sorted(tuple(r[c] for c in scores) for r in complete)


def test_one_seed_prints_its_count_and_no_interval(dirs, tmp_path, capsys):
    assert bench_fixedk(dirs, tmp_path / "fk.csv", methods=["protonet"], shots="2", seeds="7") == 0
    (lines,) = table_rows(capsys.readouterr().out).values()
    ((method, accuracy, f1, n_seeds, _),) = lines
    assert method == "protonet" and accuracy.endswith(" ± n/a") and f1.endswith(" ± n/a") and n_seeds == "1"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seeds", "5-2"], "--seeds must be non-negative integers or ranges like 0-9"),
        (["--seeds", "a,b"], "--seeds must be non-negative integers or ranges like 0-9"),
        (["--seeds", "0-99999999"], "--seeds names more than"),
        (["--shots", "0"], "--shots must be positive integers"),
        (["--shots", "2,9"], "needs 9 training images per class"),
        (["--method", "no-such-method"], "unknown method 'no-such-method'"),
        (["--task", "no-such-task"], "unknown task 'no-such-task'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(dirs, tmp_path, capsys, extra, message):
    out = tmp_path / "fk.csv"
    assert bench_fixedk(dirs, out, *extra) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert message in captured.err and "Traceback" not in captured.err
    assert not out.exists()


def test_a_bench_run_results_file_is_refused(dirs, tmp_path, capsys):
    out = tmp_path / "episodes.csv"
    out.write_text(",".join(RUN_COLUMNS) + "\n")
    assert bench_fixedk(dirs, out) == 2
    assert (
        f"results file {out} holds episode results, not fixed-K results; `bench leaderboard {out}` shows it"
        in capsys.readouterr().err
    )
    assert out.read_text() == ",".join(RUN_COLUMNS) + "\n"


def test_rows_at_another_image_size_or_from_other_code_are_not_this_runs(dirs, tmp_path, capsys):
    out = tmp_path / "fk.csv"
    assert bench_fixedk(dirs, out, methods=["protonet"], shots="1", seeds="0-1") == 0
    assert bench_fixedk(dirs, out, "--image-size", "16", methods=["protonet"], shots="1", seeds="0-1") == 2
    err = capsys.readouterr().err
    assert "2 rows of protonet 1-shot" in err and "at image size 32, this run uses 16" in err
    rows = read_rows(out)
    for r in rows:
        r["git_commit"] = "0123456789ab"
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    assert bench_fixedk(dirs, out, methods=["protonet"], shots="1", seeds="0-1") == 2
    assert "made by other code" in capsys.readouterr().err
    assert bench_fixedk(dirs, out, "--fresh", methods=["protonet"], shots="1", seeds="0-1") == 0
    assert {r["git_commit"] for r in read_rows(out)} != {"0123456789ab"} and len(read_rows(out)) == 2


def test_schema_3_rows_are_migrated_with_the_weights_digest_and_every_field_kept(dirs, tmp_path, capsys):
    from benchmark.commands.migrate import migrate_file
    from benchmark.fixedk import FIXED_K
    from benchmark.migrations import FIXED_V3
    from benchmark.results import read_results
    from common.errors import UserError

    out = tmp_path / "k.csv"
    assert bench_fixedk(dirs, out, methods=("protonet",), shots="1", seeds="0-1") == 0, capsys.readouterr().err
    made = read_rows(out)
    assert {r["transductive"] for r in made} == {"0"} and {r["schema"] for r in made} == {str(FIXED_K.version)}
    old = tmp_path / "old.csv"
    with open(old, "w", newline="") as f:  # as schema 3 wrote them
        writer = csv.DictWriter(f, fieldnames=FIXED_V3, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, "schema": "3"} for r in made)
    with pytest.raises(UserError, match="has schema 3,.*bench migrate"):
        read_results(old, FIXED_K)
    assert "migrated from schema 3 (weights: " in migrate_file(old, tmp_path / "no-data-needed")
    assert read_rows(old) == made  # draw, capped and every number as they were
