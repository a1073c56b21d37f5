"""--source SPEC on `bench map` and `bench craters run`: the source's images are the base pool, the source is in
summary.json, in cache keys and in the crater rows' key, and a source holding the mapped scene is refused."""

import csv
import json
import shutil

import numpy as np
import pytest
from fakes import aid_like, folder_like, write_image
from PIL import Image
from test_ctx_craters_task import ctx_scene_like
from test_mapping import blob_scene, windows_and_context

import methods.simpleshot
from benchmark.cli import main
from benchmark.mapping.points import write_points
from benchmark.mapping.scene import load_scene
from methods.cache import Cache
from tasks.registry import load_task
from tasks.windows import WindowGrid


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A base task folder, `aid` (9 images) and a second source folder (8 images), none sharing a file."""
    root = tmp_path_factory.mktemp("map-source")
    folder_like(root / "base", per_class=6)
    aid_like(root / "data")
    for label, name in enumerate(("x", "y")):
        for i in range(4):
            write_image(root / "other" / name / f"o{i}.png", label + 3, i, size=16)
    return root


@pytest.fixture
def spy(monkeypatch):
    """Records the base pool simpleshot prepares on, as (rows, labels)."""
    seen = []
    real = methods.simpleshot.SimpleShot.prepare

    def prepare(self, ctx):
        seen.append(ctx.base_pool())
        return real(self, ctx)

    monkeypatch.setattr(methods.simpleshot.SimpleShot, "prepare", prepare)
    return seen


def bench_map(data, tmp_path, *extra):
    Image.fromarray(blob_scene()[0]).save(tmp_path / "scene.png")
    write_points(tmp_path / "points.csv", [(60, 50), (240, 30), (20, 150)], ["blob", "ground", "ground"])
    return main(
        [
            *"map --method simpleshot --scene".split(),
            str(tmp_path / "scene.png"),
            "--labels",
            str(tmp_path / "points.csv"),
            "--window",
            "32",
            "--out",
            str(tmp_path / "out"),
            "--task",
            f"folder:{data / 'base'}",
            "--data-dir",
            str(data / "data"),
            "--image-size",
            "16",
            "--cache-dir",
            str(data / "cache"),
            "--quiet",
            "--preview",
            "100",
            *extra,
        ]
    )


def test_bench_map_prepares_on_the_source_and_says_so(data, tmp_path, spy, capsys):
    assert bench_map(data, tmp_path) == 0, capsys.readouterr().err
    plain = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert bench_map(data, tmp_path, "--source", "aid") == 0, capsys.readouterr().err
    sourced = json.loads((tmp_path / "out" / "summary.json").read_text())
    task = load_task(f"folder:{data / 'base'}", data / "data", source="aid")
    (own_rows, _), (rows, labels) = spy
    assert len(rows) == 9 and np.array_equal(rows, task.base)  # all of aid's images, and only them
    assert set(task.table.paths[rows]) == {str(p) for p in (data / "data" / "aid-subset").rglob("*.jpg")}
    assert not set(own_rows) & set(rows) and len(set(labels)) == 3
    assert plain["source"] is None and sourced["source"] == "aid" and sourced["task"] == task.name


def test_map_caches_are_keyed_by_the_source(data, tmp_path):
    Image.fromarray(blob_scene()[0]).save(tmp_path / "scene.png")
    scene = load_scene(tmp_path / "scene.png")
    grid = WindowGrid(scene.height, scene.width, 64, 64)
    contexts = [
        windows_and_context(
            load_task(f"folder:{data / 'base'}", data / "data", source=source), scene, grid, Cache(tmp_path / "cache")
        )[1]
        for source in (None, "aid", f"folder:{data / 'other'}")
    ]
    for what in ("task_key", "features_key", "base_images_key", "images_key"):
        values = [getattr(c, what) for c in contexts]
        values = [v() if callable(v) else v for v in values]
        assert len(set(values)) == 3, what  # SDFT's step 1, protonet's and maml's caches key on these


def test_a_source_holding_the_scene_is_refused_in_one_line(data, tmp_path, capsys):
    holder = tmp_path / "holder"
    for i in range(6):
        write_image(holder / "pq"[i % 2] / f"img{i}.png", i % 2, i, size=20)  # images of no other folder
    Image.fromarray(blob_scene()[0]).save(tmp_path / "scene.png")
    shutil.copy(tmp_path / "scene.png", holder / "q" / "renamed.png")  # another name, the same bytes
    assert bench_map(data, tmp_path, "--source", f"folder:{holder}") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shares" in err and "scene being mapped" in err and "renamed.png" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "spec, message", [("nope", "--source 'nope' is neither a task"), ("folder:/nonexistent", "nonexistent")]
)
def test_a_bad_source_is_one_line_as_on_bench_run(data, tmp_path, capsys, spec, message):
    assert bench_map(data, tmp_path, "--source", spec) == 2
    err = capsys.readouterr().err
    assert (
        main(
            [
                *"run --method protonet --task".split(),
                f"folder:{data / 'base'}",
                "--source",
                spec,
                "--data-dir",
                str(data / "data"),
                "--out",
                str(tmp_path / "r.csv"),
            ]
        )
        == 2
    )
    assert err == capsys.readouterr().err  # the same line as bench run's
    assert err.count("\n") == 1 and message in err, err


# ------------------------------------------------------------------------------------------- bench craters


@pytest.fixture(scope="module")
def ctx_data(data):
    ctx_scene_like(data / "data", diameter=64)  # craters of W/4 for 256 px windows
    return data


def test_crater_rows_are_keyed_by_the_source(ctx_data, tmp_path, capsys):
    data = ctx_data
    out = tmp_path / "out" / "ctx"

    def run(*extra):
        rc = main(
            [
                *"craters run --method simpleshot --shots 2 --seeds 0 --window 256 --stride 256 --image-size 16 --task".split(),
                f"folder:{data / 'base'}",
                "--data-dir",
                str(data / "data"),
                "--cache-dir",
                str(data / "cache"),
                "--work",
                str(tmp_path / "work"),
                "--out",
                str(out),
                "--quiet",
                *extra,
            ]
        )
        err = capsys.readouterr().err
        assert rc == 0, err
        with open(f"{out}.csv", newline="") as f:
            return list(csv.DictReader(f)), err

    rows, _ = run()
    assert [r["source"] for r in rows] == ["", ""]  # seed 0, smoothing none and mrf
    rows, err = run("--source", "aid")
    assert "map in" in err and [r["source"] for r in rows] == ["", "", "aid", "aid"]
    assert "`--source aid`" in (tmp_path / "out" / "ctx.md").read_text()
    again, err = run("--source", "aid")
    assert again == rows and "map in" not in err  # its own rows are reused
    rows, err = run("--source", f"folder:{data / 'other'}")
    assert "map in" in err and len(rows) == 6  # another source's rows are not
    # --fresh sets aside this source's rows only
    rows, _ = run("--source", "aid", "--fresh")
    with open(f"{out}.set-aside.csv", newline="") as f:
        assert [r["source"] for r in csv.DictReader(f)] == ["aid", "aid"]
    other = f"folder:{data / 'other'}"
    assert [r["source"] for r in rows] == ["", "", other, other, "aid", "aid"]


def test_crater_run_refuses_a_source_holding_a_ctx_tile(ctx_data, tmp_path, capsys):
    holder = tmp_path / "holder"
    for i in range(6):
        write_image(holder / "pq"[i % 2] / f"img{i}.png", i % 2, i, size=20)  # images of no other folder
    shutil.copy(ctx_data / "data" / "ctx-murray-craters" / "resized_CTX" / "CTX11_1248.png", holder / "p" / "t.png")
    rc = main(
        [
            *"craters run --method simpleshot --shots 2 --seeds 0 --window 256 --stride 256 --image-size 16 --task".split(),
            f"folder:{ctx_data / 'base'}",
            "--source",
            f"folder:{holder}",
            "--data-dir",
            str(ctx_data / "data"),
            "--cache-dir",
            str(ctx_data / "cache"),
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(tmp_path / "out" / "ctx"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "CTX11_1248.png" in err and "t.png" in err, err
    assert not (tmp_path / "out" / "ctx.csv").exists()
