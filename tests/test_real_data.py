"""End to end on the real HiRISE data (slow: decodes and embeds 3,820 images on a clean cache)."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BENCH = str(Path(sys.executable).parent / "bench")


def bench_run(data_dir, out, *args):
    env = {**os.environ, "BENCH_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [BENCH, *"run --shots 5 --episodes 40 --out".split(), str(out), "--quiet", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=1500,
    )


def rows(path):
    with open(path) as f:
        return sorted((r["method"], int(r["episode"]), r["accuracy"], r["macro_f1"]) for r in csv.DictReader(f))


def test_real_hirise_run_beats_chance_and_repeats_exactly(real_data_dir, tmp_path):
    first = bench_run(
        real_data_dir,
        tmp_path / "a.csv",
        "--method",
        "protonet",
        "--method",
        "linear-probe",
        "--method",
        "sdft-no-step1",
    )
    assert first.returncode == 0, first.stderr
    assert "hirise-regions: 5-way 5-shot" in first.stdout and "± " in first.stdout
    got = rows(tmp_path / "a.csv")
    assert len(got) == 3 * 40
    for method in ("protonet", "linear-probe", "sdft-no-step1"):
        accuracies = [float(a) for m, _, a, _ in got if m == method]
        assert sum(accuracies) / len(accuracies) > 0.45, method  # chance is 0.2
    second = bench_run(
        real_data_dir,
        tmp_path / "b.csv",
        "--method",
        "protonet",
        "--method",
        "linear-probe",
        "--method",
        "sdft-no-step1",
    )
    assert second.returncode == 0, second.stderr
    assert rows(tmp_path / "b.csv") == got
