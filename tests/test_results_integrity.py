"""Results that cannot go stale, mix or block a rerun.

Each case here would otherwise print old numbers, mix rows, crash or stop other methods:
- rows made at another image size, with another backbone, on other pixels or by other code are never taken
  for the current result (the run refuses in one line; --fresh recomputes, --reuse-stale accepts other code);
- the leaderboard never averages rows of different keys into one entry;
- a truncated manifest is named and rewritten; a run that fails before its first row leaves no debris;
- an edited accuracy of 7.5 is refused with file, line and column; a `|` in a class label survives to the report;
- large seeds print right; a plugin that raises or returns NaN / wrong shapes is named and the others run.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from fake_results import fake_rows, write_csv
from fakes_methods import instant_method
from fakes_reliability import make_folder_dataset, read_rows
from PIL import Image

from benchmark.cli import main
from benchmark.migrations import EPISODES_V1 as COLUMNS_V1
from benchmark.results import COLUMNS, read_results
from common.errors import UserError
from methods.registry import register_method

ProbeOk = instant_method("probe-ok")


@register_method("probe-raise")
class ProbeRaise(ProbeOk):
    def fit(self, support_idx, support_y, n_way, rng):
        raise ValueError("boom")


@register_method("probe-nan")
class ProbeNan(ProbeOk):
    def predict(self, query_idx):
        return np.full((len(query_idx), self.n_way), np.nan)


@register_method("probe-shape")
class ProbeShape(ProbeOk):
    def predict(self, query_idx):
        return np.zeros((len(query_idx), self.n_way - 1))


@register_method("probe-prepare")
class ProbePrepare(ProbeOk):
    def prepare(self, ctx):
        raise RuntimeError("no weights")


@pytest.fixture
def data(tmp_path) -> Path:
    return make_folder_dataset(tmp_path / "data", per_class=8, size=16)


def run(data: Path, out: Path | None, *extra, method=("probe-ok",), episodes=4) -> int:
    argv = [
        "run",
        *[a for m in method for a in ("--method", m)],
        "--task",
        f"folder:{data}",
        *"--shots 1 --ways 3 --queries 2 --episodes".split(),
        str(episodes),
        *"--image-size 16 --quiet --cache-dir".split(),
        str(data.parent / "cache"),
        *extra,
    ]
    return main(argv + (["--out", str(out)] if out is not None else []))


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def edit_column(path: Path, column: str, value: str) -> None:
    rows = read_rows(path)
    for r in rows:
        r[column] = value
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# -- 1. stale and mixed results ---------------------------------------------------------------------------------


def test_rows_at_another_image_size_are_refused_then_recomputed_with_fresh(data, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert run(data, out, "--image-size", "32") == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert run(data, out) == 2  # --image-size 16
    line = one_line(capsys)
    assert "4 rows of probe-ok 1-shot" in line and "at image size 32, this run uses 16" in line and "--fresh" in line
    assert out.read_bytes() == before  # nothing written, nothing mixed
    assert run(data, out, "--fresh") == 0
    rows = read_rows(out)
    assert len(rows) == 4 and {r["image_size"] for r in rows} == {"16"}
    aside = read_rows(tmp_path / "r.set-aside.csv")
    assert len(aside) == 4 and {r["image_size"] for r in aside} == {"32"}


def test_rows_with_another_backbone_are_refused(data, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert run(data, out) == 0
    edit_column(out, "backbone", "efficientnet_lite2")
    capsys.readouterr()
    assert run(data, out) == 2
    line = one_line(capsys)
    assert "with backbone efficientnet_lite2, this run uses efficientnet_lite0" in line


def test_rows_of_other_pixels_under_the_same_file_names_are_refused(data, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert run(data, out) == 0
    for i, path in enumerate(sorted(data.rglob("*.png"))):  # every image replaced, names and labels unchanged
        Image.fromarray(np.full((16, 16, 3), 7 + i, np.uint8)).save(path)  # (other images, not copies of one)
    capsys.readouterr()
    assert run(data, out) == 2
    line = one_line(capsys)
    assert "4 rows of probe-ok 1-shot" in line and "on other data" in line


def test_rows_of_other_code_are_refused_unless_reuse_stale(data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.csv"
    assert run(data, out) == 0
    edit_column(out, "git_commit", "0123456789ab")
    capsys.readouterr()
    assert run(data, out) == 2
    line = one_line(capsys)
    assert "made by other code (git commit 0123456789ab" in line and "--reuse-stale" in line
    assert run(data, out, "--reuse-stale") == 0
    assert "4 episodes already in" in capsys.readouterr().err.replace("\n", "") and len(read_rows(out)) == 4
    assert run(data, out, "--fresh", "--reuse-stale") == 2
    assert "exclude each other" in one_line(capsys)
    # a method whose own version changed made its rows with other code too
    monkeypatch.setattr(ProbeOk, "version", 2, raising=False)
    assert run(data, out, "--reuse-stale") == 2
    assert "by method version 1, this run uses 2" in one_line(capsys)


def test_leaderboard_shows_rows_of_different_keys_as_separate_entries(tmp_path, capsys):
    small = fake_rows({"protonet": 0.9}, shots=(1,), episodes=10)
    large = fake_rows({"protonet": 0.5}, shots=(1,), episodes=10)
    large["image_size"] = 32
    write_csv(small, tmp_path / "a.csv")
    write_csv(large, tmp_path / "b.csv")
    assert main(["leaderboard", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "protonet [image_size=128]" in out and "protonet [image_size=32]" in out
    assert out.count("\n") == 3  # header + two entries, never one mean over both


def test_a_schema_1_file_is_refused_and_migrated_with_its_numbers_unchanged(data, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert run(data, out) == 0
    rows = read_rows(out)
    with open(out, "w", newline="") as f:  # as the previous schema wrote it
        writer = csv.DictWriter(f, fieldnames=COLUMNS_V1, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    capsys.readouterr()
    assert main(["leaderboard", str(out)]) == 2
    line = one_line(capsys)
    assert "schema 1" in line and f"bench migrate {out} --data-dir DIR" in line
    data.rename(tmp_path / "elsewhere")  # the data its rows were made on is not there: no identity is invented
    assert main(["migrate", str(out), "--data-dir", str(tmp_path)]) == 2
    assert "does not load" in one_line(capsys) and read_rows(out)[0].keys() == set(COLUMNS_V1)
    (tmp_path / "elsewhere").rename(data)
    assert main(["migrate", str(out), "--data-dir", str(data.parent)]) == 0
    migrated = read_rows(out)
    for column in ("accuracy", "macro_f1", "class_accuracy", "classes", "git_commit", "manifest"):
        assert [r[column] for r in migrated] == [r[column] for r in rows]
    assert [r["data"] for r in migrated] == [r["data"] for r in rows]  # the identity a run computes
    again = out.read_bytes()
    assert main(["migrate", str(out), "--data-dir", str(data.parent)]) == 0 and out.read_bytes() == again
    assert run(data, out) == 0 and "4 episodes already in" in capsys.readouterr().err.replace("\n", "")


# -- 2. atomic manifests, no debris -----------------------------------------------------------------------------


def test_a_truncated_manifest_is_named_and_rewritten(data, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert run(data, out) == 0
    [manifest] = (tmp_path / "manifests").glob("*.npz")
    manifest.write_bytes(manifest.read_bytes()[:100])  # kill -9 or a full disk in mid-write
    capsys.readouterr()
    assert run(data, out, episodes=6) == 0
    err = capsys.readouterr().err.replace("\n", "")  # status lines are wrapped to the terminal
    assert f"episode manifest {manifest} is corrupt or truncated" in err and "rewriting it" in err
    from tasks.episodes import EpisodeSet

    assert len(EpisodeSet.load(manifest)) == 6
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_a_run_that_fails_before_any_episode_leaves_no_debris(data, tmp_path, capsys):
    out = tmp_path / "runs" / "r.csv"
    assert run(data, out, method=("probe-prepare",)) == 3
    assert "method probe-prepare failed in prepare: RuntimeError: no weights" in one_line(capsys)
    assert not (tmp_path / "runs").exists()


# -- 5. results validated on read -------------------------------------------------------------------------------


def test_an_edited_accuracy_of_7_5_is_refused_naming_file_line_and_column(tmp_path, capsys):
    frame = fake_rows({"a": 0.5, "b": 0.6}, shots=(1,), episodes=5)
    frame.loc[3, "accuracy"] = 7.5
    write_csv(frame, tmp_path / "r.csv")
    assert main(["leaderboard", str(tmp_path / "r.csv")]) == 2
    line = one_line(capsys)
    assert line.startswith(f"error: results file {tmp_path / 'r.csv'}, line 5: column accuracy is '7.5'")


@pytest.mark.parametrize(
    "column,value,why",
    [
        ("macro_f1", "nan", "not a number in [0, 1]"),
        ("accuracy", "-0.1", "not a number in [0, 1]"),
        ("shots", "0", "not an integer from 1"),
        ("ways", "1", "not an integer from 2"),
        ("n_query", "7", "not ways x queries"),
        ("classes", "a|b", "does not name 5 classes"),
        ("class_accuracy", "1|1|1|1|1.5", "outside [0, 1]"),
        ("seed", str(2**70), "not an integer from 0 to 9223372036854775807"),
    ],
)
def test_impossible_values_are_refused(tmp_path, capsys, column, value, why):
    frame = fake_rows({"a": 0.5}, shots=(1,), episodes=3).astype(object)
    frame.loc[1, column] = value
    write_csv(frame, tmp_path / "r.csv")
    with pytest.raises(UserError, match="line 3: column " + column):
        read_results(tmp_path / "r.csv")
    assert main(["leaderboard", str(tmp_path / "r.csv")]) == 2
    assert why in one_line(capsys)


def test_a_class_label_with_the_separator_reaches_the_report(tmp_path, capsys):
    data = tmp_path / "data"
    for name in ("dark|dune", "back\\slash", "$x^$"):
        (data / name).mkdir(parents=True)
    make_folder_dataset(tmp_path / "plain", per_class=8, size=16)
    for c, name in enumerate(("dark|dune", "back\\slash", "$x^$")):
        for p in (tmp_path / "plain" / f"class{c}").glob("*.png"):
            shutil.copy(p, data / name / p.name)
    out = tmp_path / "r.csv"
    assert run(data, out) == 0
    frame = read_results(out)
    from benchmark.scoring import split_labels

    assert all(sorted(split_labels(c)) == sorted(["dark|dune", "back\\slash", "$x^$"]) for c in frame["classes"])
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<th>dark|dune</th>" in page and "<th>back\\slash</th>" in page and "<th>$x^$</th>" in page


def test_large_seeds_print_right(tmp_path, capsys):
    seed = 2**63 - 1
    write_csv(fake_rows({"a": 0.5, "b": 0.6}, shots=(1,), episodes=5, seed=seed), tmp_path / "r.csv")
    assert main(["leaderboard", str(tmp_path / "r.csv"), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert f"seed {seed}" in out and "-9223372036854775808" not in out


# -- 6. plugin failures named, the others keep running ----------------------------------------------------------


@pytest.mark.parametrize(
    "method,message",
    [
        ("probe-raise", "method probe-raise failed in fit on episode 0: ValueError: boom"),
        ("probe-nan", "method probe-nan failed in predict on episode 0: returned 18 non-finite scores (e.g. nan)"),
        (
            "probe-shape",
            "method probe-shape failed in predict on episode 0: returned scores of shape (6, 2); "
            "expected (6, 3) (queries x ways)",
        ),
    ],
)
def test_a_failing_plugin_is_named_and_the_others_run(data, tmp_path, capsys, method, message):
    out = tmp_path / "r.csv"
    assert run(data, out, method=(method, "probe-ok")) == 3
    assert one_line(capsys).startswith(f"error: {message}")
    rows = read_rows(out)
    assert {r["method"] for r in rows} == {"probe-ok"} and len(rows) == 4
    out.unlink()
    assert run(data, out, "--fail-fast", method=(method, "probe-ok")) == 3
    assert one_line(capsys).startswith(f"error: {message}")
    assert not out.exists()


# -- 8. a fresh clone's main command computes ------------------------------------------------------------------


def test_runs_go_to_the_runs_folder_not_the_shipped_results(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    write_csv(fake_rows({"ref": 0.5}, shots=(1,), episodes=3), tmp_path / "results" / "ref.csv")
    assert run(data, None) == 0
    written = list((tmp_path / "runs").glob("*.csv"))
    assert len(written) == 1 and written[0].name.startswith("folder_") and len(read_rows(written[0])) == 4
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["ref.csv"]
    capsys.readouterr()
    assert main(["leaderboard", "--format", "csv"]) == 0  # the user's runs when there are any
    assert "probe-ok" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "runs")
    assert main(["leaderboard", "--format", "csv"]) == 0  # else the shipped reference results
    assert "ref" in capsys.readouterr().out


def test_columns_hold_the_whole_key():
    for column in ("data", "source", "backbone", "image_size", "preprocessing", "method_version"):
        assert column in COLUMNS
