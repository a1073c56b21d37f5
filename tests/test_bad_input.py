"""Every bad input: one line `error: ...` naming the culprit and what to do, exit code 2, no traceback, and no
result row written (the results CSV does not exist afterwards, or is unchanged)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fakes import csv_like, hirise_v1_like
from fakes_reliability import bench_env, make_folder_dataset

from benchmark.cli import main
from benchmark.results import COLUMNS


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("bad") / "data")


def one_line_error(capsys, argv, out: Path | None = None) -> str:
    before = out.read_bytes() if out is not None and out.exists() else None
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    if out is not None:  # no partial result rows
        assert (out.read_bytes() if out.exists() else None) == before
    return lines[0]


def run(tmp_path, task, *extra, data_dir=None, method="protonet", out=None):
    out = out or tmp_path / "out.csv"
    return [
        "run",
        "--method",
        method,
        "--task",
        task,
        *"--shots 1 --ways 3 --queries 2 --episodes 3 --image-size 32 --quiet --data-dir".split(),
        data_dir or tmp_path,
        "--cache-dir",
        tmp_path / "cache",
        "--out",
        out,
        *extra,
    ]


def copy_folder(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# -- images --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["protonet", "linear-probe"])
def test_truncated_image(folder, tmp_path, capsys, method):
    data = copy_folder(folder, tmp_path / "data")
    bad = data / "class1" / "3.png"
    bad.write_bytes(bad.read_bytes()[:200])
    line = one_line_error(capsys, run(tmp_path, f"folder:{data}", method=method), tmp_path / "out.csv")
    assert line == f"error: image {bad} is corrupt or truncated; replace or remove it"


def test_file_that_is_not_an_image(folder, tmp_path, capsys):
    data = copy_folder(folder, tmp_path / "data")
    bad = data / "class2" / "notes.png"
    bad.write_text("these are my notes, not a picture\n")
    line = one_line_error(capsys, run(tmp_path, f"folder:{data}"), tmp_path / "out.csv")
    assert line == f"error: image {bad} is not an image; replace or remove it"


# -- HiRISE label file ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case,expected",
    [
        ("missing", "label file {labels} is missing; re-download the dataset"),
        ("empty", "label file {labels} is empty; re-download the dataset"),
        ("undefined id", "{labels}:2: label id 9 is not defined by the dataset (known ids: 0, 1, 2, 3, 4, 5, 6)"),
        ("malformed", "{labels}:2: expected '<file> <class id>', got 'just-a-name.jpg'"),
        ("image gone", "image {image} listed in {labels} does not exist; re-download the dataset"),
    ],
)
def test_hirise_label_file(tmp_path, capsys, case, expected):
    data = hirise_v1_like(tmp_path / "data")
    labels = data / "hirise-v1" / "labels-map-proj.txt"
    lines = labels.read_text().splitlines()
    image = data / "hirise-v1" / "map-proj" / lines[0].split()[0]
    if case == "missing":
        labels.unlink()
    elif case == "empty":
        labels.write_text("\n")
    elif case == "undefined id":
        labels.write_text("\n".join([lines[0], lines[1].split()[0] + " 9", *lines[2:]]) + "\n")
    elif case == "malformed":
        labels.write_text("\n".join([lines[0], "just-a-name.jpg", *lines[2:]]) + "\n")
    else:
        image.unlink()
    line = one_line_error(capsys, run(tmp_path, "hirise-regions", data_dir=data), tmp_path / "out.csv")
    assert expected.format(labels=labels, image=image) in line


# -- CSV datasets ----------------------------------------------------------------------------------------------


def test_csv_missing_columns(tmp_path, capsys):
    csv = tmp_path / "mine.csv"
    csv.write_text("file,class\na.png,dunes\n")
    line = one_line_error(capsys, run(tmp_path, f"csv:{csv}"), tmp_path / "out.csv")
    assert f"CSV dataset {csv} lacks column(s) path, label" in line and "needs path,label" in line


def test_csv_paths_that_do_not_exist(tmp_path, capsys):
    csv = csv_like(tmp_path / "mine", groups=5, per_group=3, target_groups=3)
    csv.write_text(csv.read_text() + "img/gone.png,dunes,dunes9,target\n")
    line = one_line_error(capsys, run(tmp_path, f"csv:{csv}"), tmp_path / "out.csv")
    assert f"CSV dataset {csv}: 1 image path(s) do not exist, first {csv.parent / 'img' / 'gone.png'}" in line


def test_csv_that_is_not_a_csv(tmp_path, capsys):
    csv = tmp_path / "mine.csv"
    csv.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    line = one_line_error(capsys, run(tmp_path, f"csv:{csv}"), tmp_path / "out.csv")
    assert f"CSV dataset {csv}" in line


# -- episodes that cannot be drawn -----------------------------------------------------------------------------


def test_class_too_small_for_k_plus_q_under_the_scene_rule(tmp_path, capsys):
    # 2 classes, each 3 target scenes of 3 images: 1-shot allows 6 queries, not 7 (one scene is support)
    csv = csv_like(tmp_path / "mine", groups=5, per_group=3, target_groups=3)
    argv = run(tmp_path, f"csv:{csv}", "--ways", "2", "--queries", "7")
    line = one_line_error(capsys, argv, tmp_path / "out.csv")
    assert (
        "cannot make 2-way 1-shot 7-query episodes: only 0 classes (none) have 1+7 images in scene-disjoint" in line
        and "try --queries 6 or fewer" in line
    )


def test_more_ways_than_eligible_classes(folder, tmp_path, capsys):
    line = one_line_error(capsys, run(tmp_path, f"folder:{folder}", "--ways", "4"), tmp_path / "out.csv")
    assert "cannot make 4-way 1-shot 2-query episodes: only 3 classes (class0, class1, class2)" in line
    assert "try --ways 3" in line


@pytest.mark.parametrize(
    "flag,value,expected",
    [
        *[
            (f"--{name}", value, f"--{name} must be a positive integer, got '{value}'")
            for name in ("ways", "queries")
            for value in ("0", "-2", "three", "2.5", "")
        ],
        *[
            ("--shots", value, f"--shots must be positive integers separated by commas, got '{value}'")
            for value in ("0", "-1", "1,0", "five", "1;5", ",")
        ],
        *[
            ("--episodes", value, f"--episodes must be an integer from 1 to 100000, got '{value}'")
            for value in ("0", "-5", "many", "1e3", "100001")
        ],
        ("--seed", "-1", "--seed must be an integer from 0 to 9223372036854775807, got '-1'"),
        ("--seed", "x", "--seed must be an integer from 0 to 9223372036854775807, got 'x'"),
        ("--seed", str(2**70), f"--seed must be an integer from 0 to 9223372036854775807, got '{2**70}'"),
        ("--image-size", "100000", "--image-size must be an integer from 16 to 1024, got '100000'"),
        ("--image-size", "0", "--image-size must be an integer from 16 to 1024, got '0'"),
        ("--threads", "0", "--threads must be a positive integer, got '0'"),
    ],
)
def test_bad_numbers(folder, tmp_path, capsys, flag, value, expected):
    line = one_line_error(capsys, run(tmp_path, f"folder:{folder}", flag, value), tmp_path / "out.csv")
    assert expected in line and "bench run --help" in line


def test_huge_shots_is_a_prompt_error_not_a_hang(folder, tmp_path, capsys):
    line = one_line_error(capsys, run(tmp_path, f"folder:{folder}", "--shots", "1000000000"), tmp_path / "out.csv")
    assert "cannot make 3-way 1000000000-shot 2-query episodes" in line


# -- unknown names ---------------------------------------------------------------------------------------------


def test_unknown_method_task_dataset_backbone_name_the_closest(folder, tmp_path, capsys):
    line = one_line_error(capsys, run(tmp_path, f"folder:{folder}", method="linear-prob"), tmp_path / "out.csv")
    assert "unknown method 'linear-prob'; did you mean linear-probe" in line and "bench list" in line
    line = one_line_error(capsys, run(tmp_path, "hirise-region"))
    assert "unknown task 'hirise-region'; did you mean hirise-regions?" in line
    line = one_line_error(capsys, ["data", "verify", "domars16", "--data-dir", tmp_path])
    assert "unknown dataset 'domars16'; did you mean domars16k?" in line
    line = one_line_error(
        capsys, run(tmp_path, f"folder:{folder}", "--backbone", "efficientnet_lite9"), tmp_path / "out.csv"
    )
    assert "unknown backbone 'efficientnet_lite9'; did you mean efficientnet_lite2" in line
    line = one_line_error(capsys, run(tmp_path, f"folder:{folder}", method="protonet:stepz=3"))
    assert "unknown option 'stepz' for method protonet; did you mean steps?" in line and "train_way" in line
    line = one_line_error(capsys, run(tmp_path, f"folder:{folder}", method="protonet:steps=abc"))
    assert "bad option for method protonet (steps=abc)" in line
    line = one_line_error(capsys, run(tmp_path, f"folder:{folder}", "--shots", "five"))
    assert line.startswith("error: --shots must be") and "argument" not in line  # the flag is named once
    line = one_line_error(capsys, ["runn"])
    assert "invalid choice: 'runn'" in line


# -- results path ----------------------------------------------------------------------------------------------


def test_results_path_that_is_a_directory(folder, tmp_path, capsys):
    line = one_line_error(capsys, run(tmp_path, f"folder:{folder}", out=tmp_path))
    assert line == f"error: results path {tmp_path} is a directory; give a .csv file"


@pytest.mark.parametrize("where", ["under a file", "read-only filesystem"])
def test_unwritable_results_path(folder, tmp_path, capsys, where):
    if where == "under a file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out.csv"
    else:
        out = Path("/proc/marsfsl-results.csv")  # not writable, even by root
    line = one_line_error(capsys, run(tmp_path, f"folder:{folder}", out=out))
    assert line.startswith(f"error: results path {out} is not writable") and "choose another with --out" in line
    assert not out.exists()


def test_results_csv_from_an_incompatible_version(folder, tmp_path, capsys):
    out = tmp_path / "old.csv"
    out.write_text("schema,task,method,accuracy\n0,hirise-regions,protonet,0.5\n")
    line = one_line_error(capsys, run(tmp_path, f"folder:{folder}", out=out), out)
    assert line == (
        f"error: results file {out} was written by an incompatible version (columns differ); write "
        "to a new file with --out"
    )


def test_results_file_that_is_not_text(folder, tmp_path, capsys):
    out = tmp_path / "binary.csv"
    out.write_bytes(b"\xff\xfe\x00garbage\x00\n")
    line = one_line_error(capsys, run(tmp_path, f"folder:{folder}", out=out), out)
    assert f"results file {out} is not a text CSV" in line


def test_missing_data_directory(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    line = one_line_error(capsys, run(tmp_path, "hirise-regions", data_dir=missing), tmp_path / "out.csv")
    assert f"data directory {missing} does not exist" in line and "--data-dir" in line
    line = one_line_error(capsys, run(tmp_path, f"folder:{missing}"), tmp_path / "out.csv")
    assert f"folder dataset {missing} does not exist" in line


# -- a plugin whose entry point fails to import ------------------------------------------------------------------


def test_broken_plugin_is_named_and_the_rest_keep_working(folder, tmp_path):
    site = tmp_path / "site"
    (site / "broken_pkg").mkdir(parents=True)
    (site / "broken_pkg" / "__init__.py").write_text("import no_such_module_anywhere\n")
    info = site / "broken_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[marsfsl.methods]\nbroken = broken_pkg:Method\n")
    env = bench_env(PYTHONPATH=str(site))
    bench = [str(Path(sys.executable).parent / "bench")]

    listed = subprocess.run(bench + ["list"], capture_output=True, text=True, env=env, timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert "protonet" in listed.stdout and "linear-probe" in listed.stdout
    warning = (
        "plugin broken (broken_pkg:Method) failed to import: ModuleNotFoundError: No module named "
        "'no_such_module_anywhere'"
    )
    assert warning in " ".join(listed.stdout.split()) and not listed.stderr.strip()

    out = tmp_path / "out.csv"
    failed = subprocess.run(
        bench + run(tmp_path, f"folder:{folder}", method="broken", out=out),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines() == [f"error: {warning}; fix or uninstall that plugin"]
    assert not out.exists()

    works = subprocess.run(
        bench + [str(a) for a in run(tmp_path, f"folder:{folder}", out=out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert works.returncode == 0, works.stderr
    with open(out) as f:
        assert f.readline().strip() == ",".join(COLUMNS) and len(f.readlines()) == 3


def test_prefix_without_a_path(tmp_path, capsys):
    for prefix in ("folder", "csv"):
        line = one_line_error(capsys, run(tmp_path, f"{prefix}:"), tmp_path / "out.csv")
        assert f"'{prefix}:' names no {prefix}; give one, e.g. {prefix}:/path/to/my-images" in line


def test_too_few_scenes_for_the_scene_split(tmp_path, capsys):
    data = make_folder_dataset(tmp_path / "tiny", n_classes=2, per_class=2)
    line = one_line_error(capsys, run(tmp_path, f"folder:{data}", "--ways", "2"), tmp_path / "out.csv")
    assert f"folder dataset {data} has 4 scene(s)" in line and "which needs 5" in line


# -- cache folder ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["file", "below a file"])
def test_cache_dir_that_is_a_file(folder, tmp_path, capsys, where):
    blocker = tmp_path / "cache-file"
    blocker.write_text("not a folder")
    cache_dir = blocker if where == "file" else blocker / "sub"
    argv = run(tmp_path, f"folder:{folder}")
    argv[argv.index("--cache-dir") + 1] = cache_dir
    line = one_line_error(capsys, argv, tmp_path / "out.csv")
    assert line == (
        f"error: cache folder {cache_dir} cannot be used: {blocker} is a file; pass --cache-dir with a "
        "folder (or set BENCH_CACHE_DIR), or move the file away"
    )


@pytest.mark.parametrize("errno_, reason", [(30, "Read-only file system"), (28, "No space left on device")])
def test_read_only_or_full_cache_folder_runs_without_caching(folder, tmp_path, capsys, monkeypatch, errno_, reason):
    import methods.cache

    def refuse(path, data):
        raise OSError(errno_, reason)

    monkeypatch.setattr(methods.cache, "atomic_write_bytes", refuse)
    out = tmp_path / "out.csv"
    assert main([str(a) for a in run(tmp_path, f"folder:{folder}", method="simpleshot")]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("warning", "error", "internal"))]
    assert err == [
        f"warning: cannot write to cache folder {tmp_path / 'cache'} ({reason}); computing without caching "
        "for the rest of this run (free space, fix its permissions or pass another --cache-dir)"
    ]
    assert len(out.read_text().splitlines()) == 1 + 3  # header and the three episodes
    assert not list((tmp_path / "cache").rglob("*.npy"))
