"""`bench report`: PNG plots, a self-contained report.html, rendered in headless Chromium."""

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_results import fake_rows, write_csv
from PIL import Image

from benchmark.cli import main

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"  # git-ignored; CI keeps what the tests leave here
METHODS = {"protonet": 0.55, "linear-probe": 0.58, "sdft": 0.68}


@pytest.fixture
def report(tmp_path):
    """Two tasks x three shots in two files, as from two machines; returns (out dir, rows)."""
    rows = pd.concat(
        [
            fake_rows(
                METHODS,
                shots=(1, 5, 10),
                episodes=30,
                task="hirise-regions",
                class_bias={"spider": -0.3, "crater": 0.2},
            ),
            fake_rows(METHODS, shots=(1, 5, 10), episodes=30, task="aid-classes", ways=4, queries=10),
        ]
    )
    write_csv(rows[rows["method"] != "sdft"], tmp_path / "machine1.csv")
    write_csv(rows[rows["method"] == "sdft"], tmp_path / "machine2.csv")
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "machine1.csv"), str(tmp_path / "machine2.csv"), "--out", str(out)]) == 0
    return out, rows


def test_accuracy_axis_spans_the_means_not_a_two_episode_band(tmp_path):
    from benchmark.report import plot_accuracy_vs_shots

    rows = pd.DataFrame(
        {
            "entry": ["tight"] * 40 + ["two episodes"] * 4,
            "shots": [1] * 20 + [5] * 20 + [1, 1, 5, 5],
            "accuracy": [0.60, 0.62] * 10 + [0.70, 0.72] * 10 + [0.2, 1.0, 0.5, 1.0],
        }
    )
    fig = plot_accuracy_vs_shots(rows, "t", tmp_path / "a.png")
    low, high = fig.axes[0].get_ylim()
    assert (low, high) == (55.0, 80.0)  # the means 61, 71, 60 and 75, 5 points either side; the bands run off
    assert (tmp_path / "a.png").is_file()


def test_report_writes_plots_and_a_self_contained_page(report):
    out, _ = report
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [
        "accuracy-vs-shots-aid-classes-4w10q-seed0.png",
        "accuracy-vs-shots-hirise-regions-5w15q-seed0.png",
        "class-accuracy-aid-classes-4w10q-seed0.png",
        "class-accuracy-hirise-regions-5w15q-seed0.png",
    ]
    for name in pngs:
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.width >= 500 and img.height >= 300
    page = (out / "report.html").read_text()
    assert page.count('<table class="leaderboard">') == 6 and page.count('<table class="per-class">') == 6
    inlined = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert sorted(base64.b64decode(d) for d in inlined) == sorted((out / n).read_bytes() for n in pngs)
    # nothing fetched from elsewhere: no external scripts, styles, images or links
    assert not re.search(r"<(script|link|iframe)\b", page) and not re.search(r'(src|href)="(?!data:)', page)
    assert "machine1.csv" in page and "machine2.csv" in page


def test_heat_map_shows_per_class_accuracy(report):
    out, rows = report
    page = (out / "report.html").read_text()
    # the spider class was made 30 points harder, crater 20 points easier: the per-class table shows it
    section = page[page.index("<h2>hirise-regions") :]
    table = section[section.index("per-class accuracy %, 5-shot") :]
    table = table[: table.index("</table>")]
    cells = re.findall(r"<tr><td>(sdft)</td>(.*?)</tr>", table)[0][1]
    values = [float(v) for v in re.findall(r"<td>([\d.]+) ±", cells)]
    header = re.findall(r"<th>([^<]+)</th>", table)[1:]
    per_class = dict(zip(header, values))
    assert per_class["spider"] < min(v for c, v in per_class.items() if c != "spider") - 10
    assert per_class["crater"] > max(v for c, v in per_class.items() if c != "crater") + 5


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def run_chromium(binary, tmp_path, *args):
    flags = [
        *"--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking --disable-component-update --disable-sync --disable-dev-shm-usage".split(),
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=180)


def test_report_renders_in_headless_chromium(report, tmp_path):
    binary = chromium()
    if binary is None:
        if under_ci():
            pytest.fail(
                "chromium is not installed under CI; .ci/run installs the Debian packages chromium and chromium-driver"
            )
        pytest.skip("chromium not installed (Debian: apt-get install chromium chromium-driver); required under CI")
    out, _ = report
    url = (out / "report.html").resolve().as_uri()
    dom = run_chromium(binary, tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('<table class="leaderboard">') == 6
    assert len(re.findall(r'<img src="data:image/png;base64,', dom.stdout)) == 4
    assert "Δ vs best %" in dom.stdout and ">best<" in dom.stdout
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    done = run_chromium(binary, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", "--hide-scrollbars", url)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=int)
    assert pixels.shape[:2] == (1600, 1200)
    # The page's text and tables are grey on white; only the plots are coloured. Coloured pixels in the
    # screenshot mean the inlined PNGs were decoded and drawn.
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 80).mean() > 0.01
    assert (pixels.sum(axis=2) < 200).mean() > 0.001  # and there is dark text


def test_a_transductive_method_is_marked_and_dashed_in_the_plot(tmp_path):
    from benchmark.report import plot_accuracy_vs_shots

    rows = pd.DataFrame(
        {
            "entry": ["pt-map"] * 4 + ["protonet"] * 4,
            "shots": [1, 1, 5, 5] * 2,
            "accuracy": [0.6, 0.7, 0.8, 0.9] * 2,
            "transductive": [1] * 4 + [0] * 4,
        }
    )
    fig = plot_accuracy_vs_shots(rows, "t", tmp_path / "a.png")
    lines = {line.get_label(): line.get_linestyle() for line in fig.axes[0].get_lines()}
    assert lines == {"pt-map (transductive)": "--", "protonet": "-"}
