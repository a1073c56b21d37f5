"""The ctx-craters task: windows of a (generated) CTX scene labelled by bench map's crater rule, grouped by tile."""

import csv

import numpy as np
import pytest
from PIL import Image

from benchmark.cli import main
from tasks.datasets.ctx_crater_windows import WINDOW, derived_key, load_ctx_craters
from tasks.datasets.ctx_murray import TILE
from tasks.registry import load_task

OFFSETS = ((300, 300), (900, 700), (620, 1000))  # crater centres inside each tile, far from its edges


def ctx_scene_like(data_dir, diameter=32):
    """data_dir/ctx-murray-craters: 9 noise tiles and three craters of `diameter` px per tile."""
    root = data_dir / "ctx-murray-craters"
    (root / "resized_CTX").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for r in range(3):
        for c in range(3):
            Image.fromarray(rng.integers(0, 256, (TILE, TILE), dtype=np.uint8)).save(
                root / "resized_CTX" / f"CTX{r}{c}_{TILE}.png", compress_level=0
            )
    boxes = [
        (
            c * TILE + x - diameter / 2,
            r * TILE + y - diameter / 2,
            c * TILE + x + diameter / 2,
            r * TILE + y + diameter / 2,
        )
        for r in range(3)
        for c in range(3)
        for x, y in OFFSETS
    ]
    np.savetxt(root / "selected_craters_XY.txt", np.array(boxes), fmt="%.1f")
    return data_dir


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return ctx_scene_like(tmp_path_factory.mktemp("ctx") / "data")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ctx-cache")


def test_windows_are_labelled_grouped_and_split_by_tile(scene, cache):
    table = load_ctx_craters(scene, cache)
    crater = table.labels == table.class_names.index("crater")
    assert int(crater.sum()) == 27  # every crater is exactly one window, all windows inside a tile
    assert set(table.groups) == {f"CTX{r}{c}" for r in range(3) for c in range(3)}
    full = np.block(
        [
            [
                np.asarray(Image.open(scene / "ctx-murray-craters" / "resized_CTX" / f"CTX{r}{c}_{TILE}.png"))
                for c in range(3)
            ]
            for r in range(3)
        ]
    )
    for path, group in list(zip(table.paths, table.groups))[::97]:  # each file is its window of the scene
        x, y = (int(part[1:]) for part in path.rsplit("/", 1)[1][:-4].split("_")[1:])
        assert np.array_equal(np.asarray(Image.open(path)), full[y : y + WINDOW, x : x + WINDOW])
        assert group == f"CTX{y // TILE}{x // TILE}" and (x + WINDOW - 1) // TILE == x // TILE
    centres = [(c * TILE + ox, r * TILE + oy) for r in range(3) for c in range(3) for ox, oy in OFFSETS]
    for path, label in zip(table.paths, table.labels):  # a non-crater window holds no centre, < 1/4 of any crater
        x, y = (int(part[1:]) for part in path.rsplit("/", 1)[1][:-4].split("_")[1:])
        if label != table.class_names.index("crater"):
            for cx, cy in centres:
                overlap = max(0, min(x + WINDOW, cx + 16) - max(x, cx - 16)) * max(
                    0, min(y + WINDOW, cy + 16) - max(y, cy - 16)
                )
                assert overlap < 0.25 * 32 * 32 and not (x <= cx < x + WINDOW and y <= cy < y + WINDOW)


def test_task_split_episodes_and_derived_folder(scene, cache, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(cache))
    before = sorted(p for p in scene.rglob("*"))
    task = load_task("ctx-craters", scene)
    assert sorted(p for p in scene.rglob("*")) == before  # nothing written into the data directory
    groups = task.table.groups
    assert {g[-1] for g in groups[task.base]} == {"0"} and {g[-1] for g in groups[task.target]} == {"1", "2"}
    folder = cache / "derived" / f"ctx-craters-{derived_key(scene)}"
    assert all(p.startswith(str(folder)) for p in task.table.paths)
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left
    assert np.array_equal(load_task("ctx-craters", scene).table.frame, task.table.frame)
    for ep in task.episodes(2, 2, 2, 20, 0):
        assert not set(groups[ep.support_idx]) & set(groups[ep.query_idx])
    boxes = scene / "ctx-murray-craters" / "selected_craters_XY.txt"
    original = boxes.read_text()
    try:  # a changed scene (or rule) is another folder
        boxes.write_text(original + "10 10 30 30\n")
        assert derived_key(scene) != folder.name.rsplit("-", 1)[1]
    finally:
        boxes.write_text(original)


@pytest.mark.slow  # features of ~3,000 windows: about 20 s on two busy cores
def test_bench_run_on_ctx_craters(scene, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(cache))
    out = tmp_path / "r.csv"
    assert (
        main(
            [
                *"run --task ctx-craters --ways 2 --method protonet --shots 1,2 --queries 2 --episodes 5 --image-size 32 --data-dir".split(),
                str(scene),
                "--cache-dir",
                str(cache),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and {r["task"] for r in rows} == {"ctx-craters"}


@pytest.mark.slow
def test_real_ctx_craters_counts_and_feasibility(real_data_dir, tmp_path, monkeypatch):
    if not (real_data_dir / "ctx-murray-craters").is_dir():
        pytest.skip("ctx-murray-craters not in the real data")
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    task = load_task("ctx-craters", real_data_dir)
    crater = task.table.labels == task.class_names.index("crater")
    # the counts docs/transfer.md gives: 2,266 windows; base 80 crater / 672 not, target 168 / 1,346
    assert len(task.table) == 2266
    assert (int(crater[task.base].sum()), int((~crater[task.base]).sum())) == (80, 672)
    assert (int(crater[task.target].sum()), int((~crater[task.target]).sum())) == (168, 1346)
    for k in (1, 5, 20):  # docs/transfer.md's 2-way K-shot 15-query episodes are drawable on tiles
        episodes = task.episodes(2, k, 15, 50, 0)
        groups = task.table.groups
        assert all(not set(groups[e.support_idx]) & set(groups[e.query_idx]) for e in episodes)
