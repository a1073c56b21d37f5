"""Mars-Bench's published few-shot numbers, shown beside marsfsl's fixed-K rows and never mixed into them."""

import csv

import numpy as np
import pytest
from fakes_marsbench import marsbench_like

from benchmark.cli import main
from benchmark.published import REFERENCE, comparison, published_name, published_rows


def test_the_shipped_reference_table():
    rows = published_rows()
    assert list(rows.columns) == [*"dataset backbone training shots weighted_f1_mean seeds source".split()]
    assert set(rows["dataset"]) == {"mb-domars16k", "mb-landmark_cls", "mb-surface_cls"}
    assert set(rows["shots"]) == {1, 2, 5, 10, 15, 20} and rows["weighted_f1_mean"].between(0, 1).all()
    assert rows["source"].str.startswith("kerner-lab/MarsBench@").all()
    assert not rows.duplicated(["dataset", "backbone", "training", "shots"]).any()
    assert (REFERENCE.parent / "README.md").is_file()


def test_published_names():
    assert published_name("marsbench:/data/domars16k") == "mb-domars16k"
    assert published_name("marsbench:/x/landmark_classification+aid") == "mb-landmark_cls"
    assert published_name("domars16k") == "" and published_name("hirise-regions") == ""  # not Mars-Bench's split


@pytest.fixture(scope="module")
def fixedk_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("published")
    root = marsbench_like(tmp / "domars16k")
    out = tmp / "fk.csv"
    assert (
        main(
            [
                "fixedk",
                "--task",
                f"marsbench:{root}",
                "--data-dir",
                str(tmp),
                "--cache-dir",
                str(tmp / "c"),
                *"--image-size 32 --shots 1,3 --seeds 0-2 --out".split(),
                str(out),
                "--quiet",
                "--method",
                "simpleshot",
            ]
        )
        == 0
    )
    return out


def test_ours_beside_theirs_never_mixed(fixedk_file):
    blocks = dict(comparison([fixedk_file]))
    with open(fixedk_file, newline="") as f:
        ours = list(csv.DictReader(f))
    reference = published_rows()
    for shots in (1, 3):
        ((title, lines),) = [(t, v) for t, v in blocks.items() if f"fixed-K {shots}-shot" in t]
        mine = [line for line in lines if line[0] == "marsfsl"]
        theirs = [line for line in lines if line[0] == "published"]
        mean = np.mean([float(r["weighted_f1"]) for r in ours if r["shots"] == str(shots)])
        assert len(mine) == 1 and mine[0][2].startswith(f"{100 * mean:.1f} ± ") and mine[0][3] == "3"
        expected = reference[(reference["dataset"] == "mb-domars16k") & (reference["shots"] == shots)]
        assert len(theirs) == len(expected)  # K = 3 is not published: no published line
        assert sorted(t[2] for t in theirs) == sorted(f"{100 * v:.1f}" for v in expected["weighted_f1_mean"])
        assert all(t[4].startswith("kerner-lab/MarsBench@0bf994d") for t in theirs)
        assert ("beside Mars-Bench's published mb-domars16k" in title) == bool(len(expected))


def test_bench_leaderboard_fixedk(fixedk_file, capsys):
    assert main(["leaderboard", "--fixedk", str(fixedk_file), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert (
        "| published | ViT-L/16 (feature_extraction) | 44.7 | 7 |" in out
        and "| marsfsl | simpleshot / efficientnet_lite0 @ 32 px |" in out
    )


def test_bench_report_fixedk_section(fixedk_file, tmp_path):
    from fake_results import fake_rows, write_csv

    episodes = tmp_path / "episodes.csv"
    write_csv(fake_rows({"protonet": 0.6}, shots=(1,), episodes=5), episodes)
    assert main(["report", str(episodes), "--out", str(tmp_path / "rep"), "--fixedk", str(fixedk_file)]) == 0
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "Fixed-K beside published numbers" in page and "kerner-lab/MarsBench@0bf994d" in page
    assert page.count('class="published"') == 2  # one table per shots of the fixed-K file


def test_one_label_with_two_configs_is_two_entries(fixedk_file, tmp_path):
    import pandas as pd

    rows = pd.read_csv(fixedk_file, dtype=str, keep_default_na=False)
    other = rows.assign(config='{"norm": "l2n"}')
    both = tmp_path / "both.csv"
    pd.concat([rows, other]).to_csv(both, index=False)
    for _, lines in comparison([both]):
        mine = [line[1] for line in lines if line[0] == "marsfsl"]
        assert len(mine) == 2 and len(set(mine)) == 2 and all("[" in m for m in mine)
