"""`bench leaderboard`: merging result files, refusing unpaired or conflicting rows, output formats."""

import json

import pandas as pd
import pytest
from fake_results import fake_rows, write_csv

from benchmark.cli import main
from benchmark.leaderboard import leaderboard, load_results, to_csv
from common.errors import UserError

METHODS = {"protonet": 0.60, "linear-probe": 0.605, "sdft": 0.70, "weak": 0.45}


@pytest.fixture
def whole(tmp_path):
    frame = fake_rows(METHODS, shots=(1, 5, 10), episodes=60)
    write_csv(frame, tmp_path / "whole.csv")
    return frame


def board_csv(*paths) -> str:
    rows, _ = load_results([str(p) for p in paths])
    return to_csv(leaderboard(rows))


def test_merging_two_halves_gives_the_whole_runs_table(whole, tmp_path):
    shuffled = whole.sample(frac=1, random_state=0)
    write_csv(shuffled.iloc[: len(whole) // 2], tmp_path / "a.csv")
    write_csv(shuffled.iloc[len(whole) // 2 :], tmp_path / "b.csv")
    expected = board_csv(tmp_path / "whole.csv")
    assert board_csv(tmp_path / "a.csv", tmp_path / "b.csv") == expected
    assert board_csv(tmp_path / "b.csv", tmp_path / "a.csv") == expected
    # split by method, as two machines would: same table
    write_csv(whole[whole["method"].isin(["sdft", "weak"])], tmp_path / "m1.csv")
    write_csv(whole[~whole["method"].isin(["sdft", "weak"])], tmp_path / "m2.csv")
    assert board_csv(tmp_path / "m1.csv", tmp_path / "m2.csv") == expected


def test_leaderboard_has_paired_differences_and_tied_ranks(whole, tmp_path):
    board = leaderboard(load_results([str(tmp_path / "whole.csv")])[0])
    assert len(board) == 3 * len(METHODS)
    for _, g in board.groupby("shots"):
        g = g.set_index("method")
        assert g.index[0] == "sdft" and g.loc["sdft", "rank"] == 1 and g.loc["sdft", "delta"] == 0
        assert g.loc["weak", "rank"] == 4 and g.loc["weak", "delta"] < -0.1
        assert g.loc["protonet", "rank"] == g.loc["linear-probe", "rank"] == 2  # 0.5 points apart: tied
        assert g.loc["weak", "delta"] + g.loc["weak", "delta_ci95"] < 0
        assert (g["paired"] == 60).all()


def test_exact_duplicates_are_dropped(whole, tmp_path):
    write_csv(whole.iloc[:100], tmp_path / "part.csv")
    rows, merged = load_results([str(tmp_path / "whole.csv"), str(tmp_path / "part.csv")])
    assert merged["duplicates"] == 100 and len(rows) == len(whole)
    assert board_csv(tmp_path / "whole.csv", tmp_path / "part.csv") == board_csv(tmp_path / "whole.csv")


def test_conflicting_rows_are_refused_naming_both_files(whole, tmp_path, capsys):
    changed = whole.iloc[:5].copy()
    changed.loc[changed.index[3], "accuracy"] = 0.123
    write_csv(changed, tmp_path / "other.csv")
    assert main(["leaderboard", str(tmp_path / "whole.csv"), str(tmp_path / "other.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: conflicting results")
    assert "whole.csv" in err and "other.csv" in err and "0.123" in err


def test_different_episode_streams_are_refused(whole, tmp_path, capsys):
    write_csv(fake_rows({"ridge": 0.6}, shots=(5,), episodes=10, seed=1), tmp_path / "seed1.csv")
    assert main(["leaderboard", str(tmp_path / "whole.csv"), str(tmp_path / "seed1.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot merge")
    assert "whole.csv" in err and "seed1.csv" in err and "5-shot" in err and "not paired" in err
    # a setting only one file has is no conflict
    write_csv(fake_rows({"ridge": 0.6}, shots=(20,), episodes=10, seed=1), tmp_path / "other_shots.csv")
    rows, _ = load_results([str(tmp_path / "whole.csv"), str(tmp_path / "other_shots.csv")])
    assert sorted(rows["shots"].unique()) == [1, 5, 10, 20]


def test_two_seeds_in_one_file_are_separate_tables(tmp_path):
    both = pd.concat([fake_rows(METHODS, shots=(5,), episodes=20, seed=s) for s in (0, 1)])
    write_csv(both, tmp_path / "both.csv")
    board = leaderboard(load_results([str(tmp_path / "both.csv")])[0])
    assert sorted(board["seed"].unique()) == ["0", "1"] and len(board) == 2 * len(METHODS)
    assert (board.groupby("seed")["rank"].min() == 1).all()


def test_one_label_with_two_configs_becomes_two_entries(tmp_path):
    a = fake_rows({"protonet": 0.6}, shots=(5,), episodes=20)
    b = a.assign(config='{"x": 2}', accuracy=a["accuracy"] * 0.9)
    write_csv(pd.concat([a, b]), tmp_path / "r.csv")
    board = leaderboard(load_results([str(tmp_path / "r.csv")])[0])
    assert len(board) == 2 and all(m.startswith("protonet [") for m in board["method"])


def test_formats(whole, tmp_path, capsys):
    assert main(["leaderboard", str(tmp_path / "whole.csv")]) == 0
    out = capsys.readouterr().out
    assert "fake-task: 5-way 5-shot" in out and "best" in out and "Δ vs best" in out
    assert main(["leaderboard", str(tmp_path / "whole.csv"), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 12 and {"rank", "delta", "delta_ci95", "paired", "accuracy_ci95"} <= set(records[0])
    assert records[0]["delta_ci95"] is None and records[0]["method"] == "sdft"
    assert (
        main(["leaderboard", str(tmp_path / "whole.csv"), "--format", "markdown", "--out", str(tmp_path / "board.md")])
        == 0
    )
    md = (tmp_path / "board.md").read_text()
    assert md.count("| rank | method |") == 3 and "| 1 | sdft |" in md
    assert main(["leaderboard", str(tmp_path / "whole.csv"), "--format", "csv"]) == 0
    assert capsys.readouterr().out == board_csv(tmp_path / "whole.csv")


def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cases = [[], ["missing.csv"], ["results/*.csv"], ["."]]
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    cases.append(["bad.csv"])
    frame = fake_rows({"m": 0.5}, shots=(1,), episodes=3)
    frame["accuracy"] = frame["accuracy"].astype(object)
    frame.loc[1, "accuracy"] = "high"
    write_csv(frame, tmp_path / "text.csv")
    cases.append(["text.csv"])
    for args in cases:
        assert main(["leaderboard", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, (args, err)
    with pytest.raises(UserError, match="line 3: column accuracy"):
        load_results(["text.csv"])


def test_summary_is_method_by_shots_with_ties_in_bold(tmp_path, capsys):
    frame = fake_rows({"a": 0.70, "b": 0.70, "c": 0.40}, shots=(1, 5), episodes=40, noise=0.0)
    frame = frame[~((frame["method"] == "c") & (frame["shots"] == 5))]  # c was not run at 5 shots
    write_csv(frame, tmp_path / "r.csv")
    assert main(["leaderboard", str(tmp_path / "r.csv"), "--format", "summary"]) == 0
    md = capsys.readouterr().out
    lines = [line for line in md.splitlines() if line.startswith("| `")]
    names = [line.split("`")[1] for line in lines]
    assert sorted(names[:2]) == ["a", "b"] and names[2] == "c"
    assert "| method | 1-shot | 5-shot |" in md
    c = lines[2].split(" | ")
    assert c[2].strip(" |") == "–" and not c[1].startswith("**")  # c: far below, not run at 5 shots
    for line in lines[:2]:  # a and b: same means up to noise-free binomial draws, tied at rank 1 in both columns
        assert line.count("**") == 4 and "(40)" in line
    board = leaderboard(load_results([str(tmp_path / "r.csv")])[0])
    a1 = board[(board["method"] == "a") & (board["shots"] == 1)].iloc[0]
    assert f"{100 * a1.accuracy:.2f} ± {100 * a1.accuracy_ci95:.2f} (40)" in md


def test_without_files_it_takes_the_episode_results_in_results_and_skips_other_tables(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    write_csv(fake_rows({"m": 0.5, "n": 0.6}, shots=(1,), episodes=5), tmp_path / "results" / "task.csv")
    (tmp_path / "results" / "ctx-craters.csv").write_text("method,shots,seed,f1\nprotonet,5,0,0.4\n")
    assert main(["leaderboard", "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert "10 episode rows from 1 file(s)" in captured.err and "fake-task" in captured.out
    assert main(["leaderboard", "results/ctx-craters.csv"]) == 2  # named explicitly: refused, in one line
    assert capsys.readouterr().err.count("\n") == 1


def test_sources_format_titles_each_target_task():
    """--format sources: rows of two target tasks get a table each, under their own title."""
    import pandas as pd

    from benchmark.leaderboard import to_sources

    frames = []
    for task in ("alpha", "beta"):
        for source in ("", "aid"):
            frame = fake_rows({"m": 0.6}, shots=(1,), episodes=4)
            frame["task"] = f"{task}+{source}" if source else task
            frame["source"] = source
            frame["entry"] = frame["method"]
            frames.append(frame)
    text = to_sources(pd.concat(frames, ignore_index=True))
    assert text.count("**alpha**") == 1 and text.count("**beta**") == 1
    assert text.count("| method | K | source |") == 2
    assert text.index("**beta**") > text.index("| `m` | 1 | aid |")
