"""Bad input gives one line on stderr and exit code 2: missing data directory or dataset, unknown names (with
the closest match), infeasible episodes, bad numbers."""

import pytest
from fakes import csv_like, hirise_v1_like

from benchmark.cli import main


def one_line_error(capsys, argv) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def run_args(tmp_path, data_dir, *extra):
    return [
        *"run --method protonet --shots 1 --episodes 2 --quiet --data-dir".split(),
        str(data_dir),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "out.csv"),
        *extra,
    ]


@pytest.mark.parametrize("command", ["run", "verify"])
def test_missing_data_dir(tmp_path, capsys, command):
    missing = tmp_path / "no-such-dir"
    argv = (
        run_args(tmp_path, missing) if command == "run" else ["data", "verify", "hirise-v1", "--data-dir", str(missing)]
    )
    line = one_line_error(capsys, argv)
    assert f"data directory {missing} does not exist" in line and "--data-dir" in line
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("command", ["run", "verify"])
def test_missing_dataset(tmp_path, capsys, command):
    argv = (
        run_args(tmp_path, tmp_path)
        if command == "run"
        else ["data", "verify", "hirise-v1", "--data-dir", str(tmp_path)]
    )
    line = one_line_error(capsys, argv)
    assert f"dataset hirise-v1 not found: looked in {tmp_path / 'hirise-v1'}" in line
    assert "bench data download hirise-v1" in line


def test_unknown_method_suggests_the_closest(tmp_path, capsys):
    data = hirise_v1_like(tmp_path / "data")
    argv = run_args(tmp_path, data)
    argv[argv.index("protonet")] = "protonett"
    line = one_line_error(capsys, argv)
    assert "unknown method 'protonett'" in line and "did you mean protonet" in line
    assert not (tmp_path / "out.csv").exists()


def test_unknown_task_and_dataset_suggest_the_closest(tmp_path, capsys):
    line = one_line_error(capsys, run_args(tmp_path, tmp_path, "--task", "hirise-region"))
    assert "unknown task 'hirise-region'" in line and "did you mean hirise-regions" in line
    line = one_line_error(capsys, ["data", "verify", "hirise", "--data-dir", str(tmp_path)])
    assert "unknown dataset 'hirise'" in line and "hirise-v1" in line


def test_infeasible_episodes_through_the_cli(tmp_path, capsys):
    # target split: 3 scenes x 3 images per class, so 1-shot episodes allow at most 6 queries
    csv = csv_like(tmp_path / "mine", groups=5, per_group=3, target_groups=3)
    line = one_line_error(capsys, run_args(tmp_path, tmp_path, "--task", f"csv:{csv}", "--ways", "2"))
    assert "cannot make 2-way 1-shot 15-query episodes" in line and "try --queries 6 or fewer" in line
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("flag,value", [("--shots", "0"), ("--shots", "five"), ("--ways", "-1"), ("--episodes", "x")])
def test_bad_numbers(tmp_path, capsys, flag, value):
    line = one_line_error(capsys, run_args(tmp_path, tmp_path, flag, value))
    assert flag in line and repr(value) in line


def test_config_from_takes_a_renamed_setting_from_its_option():
    """A config's n_way and n_query come from --ways and --queries (common.settings.ARG_NAMES), as its other
    fields come from the options of their own names."""
    import argparse
    from dataclasses import dataclass

    from benchmark.cli import config_from

    @dataclass
    class Config:
        task: str = "t"
        n_way: int = 5
        n_query: int = 15
        seed: int = 0

    args = argparse.Namespace(task="other", ways=3, queries=7)
    assert config_from(Config, args, seed=4) == Config("other", 3, 7, 4)
