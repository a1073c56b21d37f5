"""Smaller inputs that were taken silently or named wrongly, each now one line (exit 2) or handled right:
invisible and look-alike class names (datasets and `bench map`), a method option given twice, `--out` naming a
folder, a whole last row without its final newline, contradicting rows in one file, a fixed-K file where
episode results are read (and the reverse), `bench migrate` on a folder, a --source given by a relative path,
and SDFT's step 1 on a base pool too small for its held-out fold."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from fakes import write_image
from fakes_methods import instant_method
from fakes_reliability import make_folder_dataset, read_rows
from PIL import Image

from benchmark.cli import main
from benchmark.results import COLUMNS, read_results
from common.errors import UserError

Ok = instant_method("si-ok")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("small") / "data", per_class=8, size=16)


def run_argv(data, out, *extra, method="si-ok", episodes=3, task=None) -> list[str]:
    return [
        "run",
        "--method",
        method,
        "--task",
        task or f"folder:{data}",
        *"--shots 1 --ways 3 --queries 2 --episodes".split(),
        str(episodes),
        *"--image-size 16 --quiet --cache-dir".split(),
        str(Path(data).parent / "cache"),
        "--out",
        str(out),
        *map(str, extra),
    ]


def one_line_error(capsys, argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(("error:", "internal error:"))]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- class names a reader cannot tell apart ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "second,message",
    [
        (
            "dunes\u200b",
            "class folder 'dunes\\u200b' holds a character that does not show (U+200B ZERO WIDTH SPACE); "
            "rename it without it",
        ),
        ("dunes\u00a0x", "class folder 'dunes\\xa0x' holds a character that does not show (U+00A0 NO-BREAK SPACE)"),
        ("DUNES", "class folders 'DUNES', 'dunes' differ only by case"),
        ("ｄｕｎｅｓ", "class folders 'dunes', 'ｄｕｎｅｓ' differ only by case, Unicode form or spacing"),
    ],
)
def test_folder_classes_that_look_alike_or_hide_characters_are_refused(tmp_path, capsys, second, message):
    for label, name in enumerate(("dunes", second, "craters")):
        for i in range(4):
            write_image(tmp_path / "data" / name / f"{i}.png", label, i)
    line = one_line_error(capsys, run_argv(tmp_path / "data", tmp_path / "r.csv"))
    assert line.startswith(f"error: folder dataset {tmp_path / 'data'}: {message}"), line
    assert not (tmp_path / "r.csv").exists()


def test_a_csv_label_with_a_zero_width_joiner_is_refused(tmp_path, capsys):
    rows = ["path,label"]
    for label, name in enumerate(("crater", "crater\u200d", "dune")):
        for i in range(4):
            write_image(tmp_path / "img" / f"{label}_{i}.png", label, i)
            rows.append(f"img/{label}_{i}.png,{name}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    line = one_line_error(capsys, run_argv(tmp_path, tmp_path / "r.csv", task=f"csv:{tmp_path / 'labels.csv'}"))
    assert "label 'crater\\u200d' holds a character that does not show (U+200D ZERO WIDTH JOINER)" in line


def map_argv(tmp_path, labels: list[str]) -> list[str]:
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "scene.png")
    points = ["x,y,label"] + [f"{8 + 16 * i},{8 + 16 * i},{name}" for i, name in enumerate(labels)]
    (tmp_path / "points.csv").write_text("\n".join(points) + "\n", encoding="utf-8")
    return [
        *"map --method si-ok --scene".split(),
        tmp_path / "scene.png",
        "--labels",
        tmp_path / "points.csv",
        "--window",
        "16",
        "--out",
        tmp_path / "map",
        "--task",
        "folder:/nonexistent",
        "--quiet",
    ]


@pytest.mark.parametrize(
    "labels,message",
    [
        (["crater", "Crater", "ground"], "labels 'Crater', 'crater' differ only by case; spell each class one way"),
        (
            ["crater", "crater\u200b", "ground"],
            "label 'crater\\u200b' holds a character that does not show (U+200B ZERO WIDTH SPACE)",
        ),
    ],
)
def test_map_labels_that_look_alike_are_refused(tmp_path, capsys, labels, message):
    line = one_line_error(capsys, map_argv(tmp_path, labels))
    assert line == f"error: labels file {tmp_path / 'points.csv'}: {message}" + (
        " (rename or merge them)" if "case" in message else "; rename it without it"
    )
    assert not (tmp_path / "map").exists()


# -- options ----------------------------------------------------------------------------------------------------


def test_a_method_option_given_twice_is_refused(data, tmp_path, capsys):
    line = one_line_error(capsys, run_argv(data, tmp_path / "r.csv", method="knn:k=1,k=3"))
    assert line == (
        "error: --method knn:k=1,k=3 gives option k twice; give each option once (to run both settings, "
        "repeat --method)"
    )


@pytest.mark.parametrize("command", ["run", "leaderboard"])
def test_out_naming_a_folder_is_refused(data, tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    if command == "run":
        argv = run_argv(data, "dir/")
    else:
        assert main(run_argv(data, tmp_path / "r.csv")) == 0
        capsys.readouterr()
        argv = ["leaderboard", str(tmp_path / "r.csv"), *"--format csv --out dir/".split()]
    line = one_line_error(capsys, argv)
    assert line.startswith(f"error: --out dir/ names a folder; give a file, e.g. {Path('dir') / 'results.csv'}")
    assert not (tmp_path / "dir").exists()


# -- results files ----------------------------------------------------------------------------------------------


def test_a_whole_last_row_without_its_newline_is_kept(data, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert main(run_argv(data, out)) == 0
    before = read_rows(out)
    out.write_text(out.read_text().rstrip("\n"))  # saved by an editor that adds no final newline
    assert len(read_results(out)) == 3
    capsys.readouterr()
    assert main(run_argv(data, out)) == 0  # nothing to recompute
    err = capsys.readouterr().err
    assert "3 episodes already in" in err and "partial row" not in err
    assert main(run_argv(data, out, episodes=4)) == 0  # the next row goes on a line of its own
    rows = read_rows(out)
    assert rows[:3] == before and len(rows) == 4 and out.read_text().endswith("\n")
    # a row cut short is still not a result, and is cut off before the next append
    text = out.read_text()
    out.write_text(text[:-12])
    assert len(read_results(out)) == 3


def test_contradicting_rows_in_one_file_are_refused_by_run_too(data, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert main(run_argv(data, out)) == 0
    rows = read_rows(out)
    other = dict(rows[1], accuracy="0" if rows[1]["accuracy"] != "0.0" else "1")
    with open(out, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n").writerow(other)
    before = out.read_bytes()
    expected = (
        f"error: results file {out}, lines 3 and 5: two rows of the same measurement (task {rows[1]['task']} "
        f"method si-ok shots 1 ways 3 queries 2 episode 1) with different accuracy"
    )
    for argv in (run_argv(data, out, episodes=4), ["leaderboard", str(out)]):
        assert one_line_error(capsys, argv).startswith(expected)
    assert out.read_bytes() == before
    # the same row twice (a file concatenated with itself) is one measurement: still readable
    out.write_text(
        out.read_text().splitlines(keepends=True)[0] + "".join(out.read_text().splitlines(keepends=True)[1:4]) * 2
    )
    assert len(read_results(out)) == 6


def test_a_fixed_k_file_where_episode_results_are_read_and_the_reverse(tmp_path, capsys):
    from benchmark.fixedk import FIXED_K

    fixedk, episodes = tmp_path / "fk.csv", tmp_path / "ep.csv"
    fixedk.write_text(",".join(FIXED_K.columns) + "\n")
    episodes.write_text(",".join(COLUMNS) + "\n")
    assert one_line_error(capsys, ["leaderboard", fixedk]) == (
        f"error: results file {fixedk} holds fixed-K results, not episode results; `bench leaderboard --fixedk "
        f"{fixedk}` shows it"
    )
    assert one_line_error(capsys, ["leaderboard", "--fixedk", episodes]) == (
        f"error: results file {episodes} holds episode results, not fixed-K results; `bench leaderboard {episodes}` "
        "shows it"
    )


def test_each_table_is_told_by_a_column_only_it_has():
    from benchmark.fixedk import FIXED_K
    from benchmark.mapping.craters import CRATERS
    from benchmark.migrations import history
    from benchmark.results import EPISODES, TABLES

    schemas = {s.name: s for s in (EPISODES, FIXED_K, CRATERS)}
    assert {name for name, _, _ in TABLES} == set(schemas)
    for name, column, _ in TABLES:
        for schema in schemas.values():
            headers = history(schema.name).headers()
            assert all((column in header) == (schema.name == name) for header in headers), (name, schema.name)


def test_migrate_on_a_folder_says_it_is_a_folder(tmp_path, capsys):
    assert one_line_error(capsys, ["migrate", tmp_path]) == (
        f"error: results path {tmp_path} is a directory; give the results files in it (e.g. {tmp_path}/*.csv)"
    )


# -- sources ----------------------------------------------------------------------------------------------------


def test_a_relative_source_is_recorded_by_its_absolute_path(data, tmp_path, capsys, monkeypatch):
    for where in ("a", "b"):  # two different folders, both reached as `folder:src` from their working folder
        make_folder_dataset(tmp_path / where / "src", per_class=6, size=24 if where == "a" else 20)
    out = tmp_path / "r.csv"
    for where in ("a", "b"):
        monkeypatch.chdir(tmp_path / where)
        assert main(run_argv(data, out, "--source", "folder:src")) == 0
    sources = sorted({r["source"] for r in read_rows(out)})
    assert sources == [f"folder:{(tmp_path / 'a' / 'src').resolve()}", f"folder:{(tmp_path / 'b' / 'src').resolve()}"]
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)  # another spelling of the first: its rows, nothing to recompute
    assert main(run_argv(data, out, "--source", "folder:./a/src/")) == 0
    assert "3 episodes already in" in capsys.readouterr().err and len(read_rows(out)) == 6


# -- SDFT's step 1 ----------------------------------------------------------------------------------------------


def test_sdft_step1_says_what_its_held_out_fold_needs():
    from methods.sdft import step1_split

    labels = np.repeat(np.arange(3), 7)  # 3 classes x 7 base images, each its own scene
    groups = np.arange(len(labels)).astype(str)
    with pytest.raises(UserError) as refused:
        step1_split(labels, groups, 8, seed=0)
    assert str(refused.value) == (
        "sdft step 1 holds out 1 of val_folds=8 scene-disjoint folds of the base pool (its 21 scenes) to stop "
        "early, which needs a class with at least 8 base-pool images; the largest has 7 (21 images in 3 classes): "
        "use sdft:val_folds=7 or fewer, or give a larger base pool"
    )
    train, val = step1_split(labels, groups, 7, seed=0)
    assert len(val) and not set(groups[train]) & set(groups[val])


def test_sdft_on_a_small_folder_set_is_one_line(tmp_path, capsys):
    data = make_folder_dataset(tmp_path / "data", per_class=12, size=16)  # 3 classes x 12 images
    line = one_line_error(capsys, run_argv(data, tmp_path / "r.csv", method="sdft", episodes=1))
    assert line.startswith("error: sdft step 1 holds out 1 of val_folds=8") and "sdft:val_folds=7 or fewer" in line
    assert one_line_error(capsys, run_argv(data, tmp_path / "r.csv", method="sdft:val_folds=1")) == (
        "error: sdft: val_folds=1: step 1 holds out 1 of val_folds folds of the base pool, so it needs at least 2"
    )
