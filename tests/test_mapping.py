"""bench map: window geometry at the scene's edges, pixel alignment of the map, smoothing, bad POINTS.csv."""

from __future__ import annotations

import json

import crashing_plugins  # noqa: F401  (registers the crashing plugins)
import numpy as np
import pytest
from crashing_plugins import CRASHES
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from benchmark.cli import main
from benchmark.mapping.context import WindowImages
from benchmark.mapping.craters import regions, score_labels
from benchmark.mapping.map import map_context, map_scene, scene_windows
from benchmark.mapping.options import MapOptions
from benchmark.mapping.points import read_points, write_points
from benchmark.mapping.scene import load_scene
from benchmark.mapping.smoothing import majority_filter, mrf_smooth, smooth
from benchmark.runner import MethodSpec
from benchmark.scoring import binary_scores
from common.errors import UserError
from common.settings import Settings
from methods.base import Context, FewShotMethod
from methods.cache import Cache
from methods.concat import ConcatRows
from methods.features import load_image
from tasks.datasets.ctx_murray import window_truth
from tasks.windows import WindowGrid, window_starts
from tests.fakes import folder_like
from tests.fakes_methods import make_task

# ------------------------------------------------------------------------------------------------ geometry


def test_window_starts_reach_the_far_edge():
    assert window_starts(100, 30, 20).tolist() == [0, 20, 40, 60, 70]  # last window flush with the edge
    assert window_starts(100, 20, 20).tolist() == [0, 20, 40, 60, 80]  # exact fit: no extra window
    assert window_starts(30, 30, 7).tolist() == [0]  # one window covers the whole side
    with pytest.raises(UserError, match="larger than the scene"):
        window_starts(29, 30, 10)


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 400), window=st.integers(1, 400), stride_frac=st.floats(0.01, 1.0))
def test_windows_cover_every_pixel_and_cells_partition_the_axis(length, window, stride_frac):
    if window > length:
        return
    stride = max(1, int(window * stride_frac))
    grid = WindowGrid(length, length + 3, window, stride)
    starts = grid.ys
    assert starts[0] == 0 and starts[-1] == length - window and np.all(np.diff(starts) >= 1)
    assert np.all(np.diff(starts) <= stride)
    edges = grid.cell_edges("y")
    assert edges[0] == 0 and edges[-1] == length and np.all(np.diff(edges) >= 1)  # non-empty, in order
    # every cell lies inside its own window, so each map pixel was seen by the window it shows
    assert np.all(edges[:-1] >= starts) and np.all(edges[1:] <= starts + window)
    # the cell of a pixel (through its centre) is the window index_of gives
    rows = grid.row_of(np.arange(length) + 0.5)
    assert np.array_equal(rows, np.repeat(np.arange(len(starts)), np.diff(edges)))


def test_raster_is_the_scene_grid_and_not_transposed():
    grid = WindowGrid(height=50, width=90, window=20, stride=10)
    assert grid.shape == (4, 8)  # ys: 0,10,20,30 ; xs: 0,10,...,70
    values = np.arange(grid.n).reshape(grid.shape)
    full = grid.raster(values)
    assert full.shape == (50, 90)
    assert full[0, 0] == 0 and full[49, 89] == grid.n - 1
    assert full[0, 89] == grid.shape[1] - 1 and full[49, 0] == (grid.shape[0] - 1) * grid.shape[1]
    # pixel (x=44, y=27): column cells are split at centre midpoints 15, 25, 35, 45, ... -> column 3 (35..45)
    assert full[27, 44] == grid.index_of(44.5, 27.5) == 2 * 8 + 3
    assert grid.cell_areas().sum() == 50 * 90
    half = grid.raster(values, 0.5)
    assert half.shape == (25, 45) and half[0, 0] == 0 and half[-1, -1] == grid.n - 1


def test_grid_refuses_gaps_and_oversized_requests():
    with pytest.raises(UserError, match="stride"):
        WindowGrid(100, 100, 10, 11)
    with pytest.raises(UserError, match="larger --stride"):
        WindowGrid(100_000, 100_000, 2, 1)


def test_windows_are_preprocessed_like_dataset_images(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (70, 90), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "scene.png")
    scene = load_scene(tmp_path / "scene.png")
    grid = WindowGrid(scene.height, scene.width, 40, 20)
    images = WindowImages(scene, *grid.origins(), grid.window, 24)
    assert images.shape == (grid.n, 3, 24, 24)
    for i in (0, 5, grid.n - 1):
        x0, y0 = (int(a[i]) for a in grid.origins())
        Image.fromarray(pixels[y0 : y0 + 40, x0 : x0 + 40]).save(tmp_path / "crop.png")
        assert np.array_equal(images[i], load_image(str(tmp_path / "crop.png"), 24))
    assert np.array_equal(images[[2, 0]][1], images[0]) and len(images[1:4]) == 3


def test_rows_of_several_arrays_index_as_one(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (5, 3, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "windows.npy", rng.integers(0, 256, (7, 3, 4, 4), dtype=np.uint8))
    windows = np.load(tmp_path / "windows.npy", mmap_mode="r")
    both = ConcatRows([base, windows])
    whole = np.concatenate([base, windows])
    assert len(both) == 12 and both.shape == whole.shape and both.dtype == np.uint8 and both.ndim == 4
    for index in (0, 4, 5, 11, -1, -12, slice(3, 9), slice(None, None, -2), np.array([6, 1, 5, 11, 0])):
        assert np.array_equal(both[index], whole[index]), index
    assert both._parts[1] is windows  # the windows stay on disk, read as indexed
    base[0] = 0  # what the caller keeps is not what was handed
    assert np.array_equal(both[0], whole[0]) and not both._parts[0].flags.writeable
    got = both[[0, 6]]
    got[:] = 0  # a fresh array: the rows handed are unchanged
    assert np.array_equal(both[[0, 6]], whole[[0, 6]]) and np.array_equal(both.copy()[:], whole)
    with pytest.raises(IndexError):
        both[12]
    with pytest.raises(ValueError, match="one row shape"):
        ConcatRows([base, np.zeros((2, 3, 5, 5), np.uint8)])


def test_an_array_too_large_for_memory_is_cached_as_a_checked_memory_map(tmp_path, capsys):
    want = np.arange(48, dtype=np.uint8).reshape(4, 3, 2, 2)
    written = []

    def parts():  # written a part at a time, as a scene's windows are
        written.append(1)
        yield from (want[:3], want[3:])

    cache = Cache(tmp_path / "cache")
    first = cache.mapped_array("pixels", "k", want.shape, np.uint8, parts)
    assert isinstance(first, np.memmap) and not first.flags.writeable
    assert np.array_equal(first, want) and cache.misses == ["pixels/k"] and len(written) == 1
    assert np.array_equal(cache.mapped_array("pixels", "k", want.shape, np.uint8, parts), want)
    assert len(written) == 1 and cache.hits == ["pixels/k"]
    path = cache.path("pixels", "k", "npy")
    altered = bytearray(path.read_bytes())
    altered[-1] ^= 1
    path.write_bytes(bytes(altered))
    assert np.array_equal(cache.mapped_array("pixels", "k", want.shape, np.uint8, parts), want) and len(written) == 2
    assert capsys.readouterr().err.startswith(f"warning: cache file {path} is corrupt")
    unwritable = Cache(tmp_path / "unwritable")
    unwritable.writable = False  # as after a failed write: a temporary file, nothing in the folder
    assert np.array_equal(unwritable.mapped_array("pixels", "k", want.shape, np.uint8, parts), want)
    assert len(written) == 3 and not (tmp_path / "unwritable").exists()
    with pytest.raises(ValueError, match="parts of 3 rows"):
        cache.mapped_array("pixels", "short", want.shape, np.uint8, lambda: iter([want[:3]]))

    def failing():
        yield want[:1]
        raise OSError("the scene cannot be read")

    with pytest.raises(OSError, match="the scene cannot be read"):  # the caller's error, not a cache problem
        cache.mapped_array("pixels", "other", want.shape, np.uint8, failing)
    assert cache.writable and not list(cache.path("pixels", "other", "npy").parent.glob("*other*"))
    assert not list(cache.path("pixels", "short", "npy").parent.glob("*short*"))


# -------------------------------------------------------------------------------- the map, end to end


def blob_scene(height=176, width=272, size=40, centres=((60, 50), (200, 120), (120, 130))):
    """Dark noisy ground with bright striped square blobs at known centres (x, y); and its truth mask."""
    rng = np.random.default_rng(3)
    pixels = np.clip(rng.normal(60, 8, (height, width)), 0, 255)
    truth = np.zeros((height, width), bool)
    for cx, cy in centres:
        y0, x0 = cy - size // 2, cx - size // 2
        patch = np.full((size, size), 215.0)
        patch[::4] = 120  # horizontal stripes
        pixels[y0 : y0 + size, x0 : x0 + size] = patch + rng.normal(0, 5, (size, size))
        truth[y0 : y0 + size, x0 : x0 + size] = True
    return np.clip(pixels, 0, 255).astype(np.uint8), truth


def test_generated_blobs_are_mapped_back_in_place(tmp_path):
    centres = ((60, 50), (200, 120), (120, 130))
    pixels, truth = blob_scene(centres=centres)
    Image.fromarray(pixels).save(tmp_path / "scene.png")
    scene = load_scene(tmp_path / "scene.png")
    grid = WindowGrid(scene.height, scene.width, window=32, stride=16)
    # label two of the three blobs and three patches of ground; the third blob is found unlabelled
    write_points(
        tmp_path / "points.csv",
        [(60, 50), (200, 120), (240, 30), (20, 150), (150, 40)],
        ["blob", "blob", "ground", "ground", "ground"],
    )
    points = read_points(tmp_path / "points.csv", grid)
    assert points.class_names == ("blob", "ground")
    task = make_task(tmp_path / "base", n_classes=2, groups_per_class=2, per_group=2, base_groups=1)
    out = tmp_path / "map"
    result = map_scene(
        MethodSpec.parse("protonet"),
        task,
        scene,
        grid,
        points,
        Cache(tmp_path / "cache"),
        Settings(image_size=32, device="cpu"),
        MapOptions(out=out, preview=200),
    )
    predicted = grid.raster(result.labels) == 0
    assert result.probabilities.shape == grid.shape + (2,)
    assert (predicted == truth).mean() > 0.9
    for cx, cy in centres:  # each blob's mapped region is centred on the blob (no shift, no transposition)
        ys, xs = np.nonzero(predicted[cy - 40 : cy + 40, cx - 40 : cx + 40])
        assert abs(xs.mean() - 40) <= grid.stride / 2 and abs(ys.mean() - 40) <= grid.stride / 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == ["blob", "ground"] and summary["windows"] == grid.n
    assert abs(sum(summary["area_fraction"].values()) - 1) < 1e-9
    assert abs(summary["area_fraction"]["blob"] - predicted.mean()) < 1e-9
    assert np.array_equal(np.load(out / "labels.npy"), result.labels)
    assert np.allclose(np.load(out / "probabilities.npy").sum(-1), 1, atol=1e-5)
    for name in ("label_map.png", "overlay.png"):
        with Image.open(out / name) as img:
            assert max(img.size) <= 220
    assert {"prepare_s", "fit_s", "predict_s", "total_s"} <= set(summary["timings"])


class Reads(FewShotMethod):
    consumes = "both"


def windows_and_context(task, scene, grid, cache, method=None):
    """The harness's SceneWindows and the Context a method (default: one reading images and features) gets."""
    settings = Settings(image_size=32, device="cpu")
    windows = scene_windows(task, scene, grid, cache, settings)
    return windows, map_context(method or Reads(), task, windows, cache, settings)


def test_a_mapping_method_gets_the_base_rows_then_the_windows_by_handle(tmp_path):
    pixels, _ = blob_scene()
    Image.fromarray(pixels).save(tmp_path / "scene.png")
    scene = load_scene(tmp_path / "scene.png")
    grid = WindowGrid(scene.height, scene.width, 64, 64)
    task = make_task(tmp_path / "base", n_classes=2, groups_per_class=2, per_group=2, base_groups=1)
    windows, ctx = windows_and_context(task, scene, grid, Cache(tmp_path / "cache"))
    n_base = len(task.table)
    assert type(ctx) is Context and ctx.n_rows == n_base + grid.n
    images, plain = ctx.images(), Context(task, Cache(tmp_path / "cache"), image_size=32)
    assert len(images) == n_base + grid.n and np.array_equal(images[:n_base], plain.images())
    assert np.array_equal(ctx.features()[:n_base], plain.features())
    assert ctx.base_images_key() == plain.base_images_key()  # SDFT's step 1 is shared with `bench run`
    handle = windows.window_indices([3])[0]  # window 3 of the grid, by the handle a method addresses it by
    assert np.array_equal(images[handle], windows.window_images()[3])
    assert np.array_equal(ctx.features()[handle], windows.window_features()[3])
    assert ctx.features().shape == (n_base + grid.n, 1280)
    order = windows.window_indices() - n_base  # handles of the windows in grid order: no longer the grid order
    assert sorted(order) == list(range(grid.n)) and not np.array_equal(order, np.arange(grid.n))
    pixels = windows.handle_images()  # the windows' pixels in handle order, a read-only map of a cache file
    assert isinstance(pixels, np.memmap) and not pixels.flags.writeable
    assert np.array_equal(pixels, windows.window_images()[windows.window_order()])
    assert np.array_equal(images[n_base:], pixels)
    assert ctx.images_key() != ctx.base_images_key()
    _, other = windows_and_context(
        task, scene, WindowGrid(scene.height, scene.width, 64, 32), Cache(tmp_path / "cache")
    )
    assert other.images_key() != ctx.images_key() and other.features_key() != ctx.features_key()


@pytest.mark.parametrize(
    "consumes, written, not_written",
    [("features", "map-features", "map-pixels"), ("images", "map-pixels", "map-features")],
)
def test_only_what_a_mapping_method_reads_is_computed(tmp_path, consumes, written, not_written):
    Image.fromarray(blob_scene()[0]).save(tmp_path / "scene.png")
    scene = load_scene(tmp_path / "scene.png")
    grid = WindowGrid(scene.height, scene.width, 64, 64)
    task = make_task(tmp_path / "base", n_classes=2, groups_per_class=2, per_group=2, base_groups=1)
    method = type("Reader", (FewShotMethod,), {"consumes": consumes})()
    cache = Cache(tmp_path / "cache")
    _, ctx = windows_and_context(task, scene, grid, cache, method)
    assert len(getattr(ctx, consumes)()) == len(task.table) + grid.n
    assert (tmp_path / "cache" / written).is_dir() and not (tmp_path / "cache" / not_written).exists()
    with pytest.raises(RuntimeError, match="does not declare"):
        getattr(ctx, {"features": "images", "images": "features"}[consumes])()
    windows_and_context(task, scene, grid, cache, method)  # the next map reads the cache
    assert any(hit.startswith(f"{written}/") for hit in cache.hits)


def test_bench_map_command_writes_the_outputs(tmp_path, capsys):
    pixels, _ = blob_scene()
    Image.fromarray(pixels).save(tmp_path / "scene.png")
    write_points(tmp_path / "points.csv", [(60, 50), (240, 30), (20, 150)], ["blob", "ground", "ground"])
    folder_like(tmp_path / "base", per_class=6)
    rc = main(
        [
            *"map --method linear-probe --scene".split(),
            str(tmp_path / "scene.png"),
            "--labels",
            str(tmp_path / "points.csv"),
            "--window",
            "32",
            "--out",
            str(tmp_path / "out"),
            "--task",
            f"folder:{tmp_path / 'base'}",
            *"--image-size 32 --smooth mrf --cache-dir".split(),
            str(tmp_path / "cache"),
            "--quiet",
            "--preview",
            "150",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["stride"] == 16 and summary["smoothing"] == "mrf" and summary["smoothing_strength"] == 1.0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(summary["files"])


def bench_map_into(tmp_path, out) -> int:
    """`bench map` of a small generated scene into `out` (the scene, labels and base task made once)."""
    if not (tmp_path / "scene.png").exists():
        Image.fromarray(blob_scene()[0]).save(tmp_path / "scene.png")
        write_points(tmp_path / "points.csv", [(60, 50), (240, 30), (20, 150)], ["blob", "ground", "ground"])
        folder_like(tmp_path / "base", per_class=6)
    return main(
        [
            *"map --method linear-probe --window 32 --image-size 32 --quiet --preview 150 --scene".split(),
            str(tmp_path / "scene.png"),
            "--labels",
            str(tmp_path / "points.csv"),
            "--out",
            str(out),
            "--task",
            f"folder:{tmp_path / 'base'}",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )


def test_a_map_that_fails_while_writing_leaves_the_earlier_maps_outputs(tmp_path, capsys, monkeypatch):
    """A map's outputs replace an earlier map's as a set: one that fails half-way through writing them (a full
    disk) leaves every earlier file as it was and nothing of its own, so the folder never shows a summary.json
    beside another map's figures."""
    from benchmark.mapping import map as mapping

    out = tmp_path / "out"
    assert bench_map_into(tmp_path, out) == 0, capsys.readouterr().err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "summary.json" in before and "label_map.png" in before

    def full_disk(out, *args, **kwargs):
        (out / "label_map.png").write_bytes(b"half a figure")
        raise OSError(28, "No space left on device", str(out / "overlay.png"))

    monkeypatch.setattr(mapping, "render_maps", full_disk)
    assert bench_map_into(tmp_path, out) != 0
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "error" in line]
    assert line.startswith(f"error: cannot write the map into {out} (No space left on device)"), err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_new_map_removes_the_files_of_the_earlier_map_it_does_not_write(tmp_path, capsys):
    """Files the earlier map's summary.json lists and the new map does not write (a layer an earlier version
    wrote) go; files the summary does not list (the user's), or that lie outside the folder, stay."""
    out = tmp_path / "out"
    assert bench_map_into(tmp_path, out) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    summary["files"] += ["earlier.gpkg", "../points.csv"]
    (out / "summary.json").write_text(json.dumps(summary))
    (out / "earlier.gpkg").write_bytes(b"an earlier map's layer")
    (out / "notes.txt").write_text("mine")
    assert bench_map_into(tmp_path, out) == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([*json.loads((out / "summary.json").read_text())["files"], "notes.txt"])
    assert "earlier.gpkg" not in names and (tmp_path / "points.csv").exists()


# ----------------------------------------------------------------------------------------------- smoothing


def noisy_halves():
    """A 10 x 12 map, class 0 left and 1 right, with isolated windows flipped at 0.7 confidence."""
    truth = np.zeros((10, 12), int)
    truth[:, 6:] = 1
    probs = np.zeros((10, 12, 2), np.float32)
    probs[..., 0] = np.where(truth == 0, 0.9, 0.1)
    probs[..., 1] = 1 - probs[..., 0]
    flips = [(1, 1), (4, 3), (8, 2), (2, 9), (6, 10), (9, 8), (0, 11)]  # none adjacent to another
    for r, c in flips:
        probs[r, c] = probs[r, c, ::-1] * 0 + (np.array([0.3, 0.7]) if truth[r, c] == 0 else np.array([0.7, 0.3]))
    return truth, probs, flips


def test_smoothing_removes_isolated_errors_and_keeps_the_boundary():
    truth, probs, flips = noisy_halves()
    raw = smooth(probs, "none")
    assert (raw != truth).sum() == len(flips)
    assert np.array_equal(smooth(probs, "mrf", 1.0), truth)
    assert np.array_equal(smooth(probs, "majority", 1), truth)
    assert np.array_equal(smooth(probs, "mrf", 0.0), raw)  # no pairwise term: the argmax


def test_mrf_keeps_a_confident_small_region_and_strength_matters():
    probs = np.full((9, 9, 3), 0.05, np.float32)
    probs[..., 0] = 0.9
    probs[3:6, 3:6] = [0.02, 0.02, 0.96]  # a confident 3 x 3 patch of class 2
    assert (mrf_smooth(probs, 0.5)[3:6, 3:6] == 2).all()
    assert (mrf_smooth(probs, 20.0) == 0).all()  # overwhelming smoothing erases it
    labels = probs.argmax(-1)
    assert (majority_filter(labels, 3, 1)[4, 4] == 2) and (majority_filter(labels, 3, 1)[3, 3] == 0)


def test_smoothing_options_are_checked():
    probs = noisy_halves()[1]
    with pytest.raises(UserError, match="radius"):
        smooth(probs, "majority", 0.5)
    with pytest.raises(UserError, match="weight"):
        smooth(probs, "mrf", -1)
    with pytest.raises(UserError, match="did you mean mrf"):
        smooth(probs, "mfr")


# ---------------------------------------------------------------------------------------- bad POINTS.csv


@pytest.fixture
def scene_file(tmp_path):
    Image.fromarray(blob_scene()[0]).save(tmp_path / "scene.png")
    return tmp_path / "scene.png"


@pytest.mark.parametrize(
    "text, extra, message",
    [
        ("x,y,label\n60,50,blob\n300,20,ground\n", [], "outside the scene"),
        ("x,y,label\n60,50,blob\n-1,20,ground\n", [], "outside the scene"),
        (
            "x,y,label\n60,50,blob\n200,20,gruond\n",
            ["--classes", "blob,ground"],
            "unknown label 'gruond'.*did you mean ground",
        ),
        ("x,y,label\n60,50,blob\n200,20,blob\n", [], "too few classes"),
        ("x,y,label\n60,50,blob\n200,20,ground\n", ["--classes", "blob,ground,dune"], "too few windows for dune"),
        ("x,y,label\n", [], "no points"),
        ("col,row,class\n1,2,a\n", [], "header with columns x,y,label"),
        ("x,y,label\n60,fifty,blob\n", [], "line 2: x and y must be numbers"),
        ("x,y,label\n60,50,blob\n62,52,ground\n", [], "same window"),
    ],
)
def test_bad_points_file_is_one_line(tmp_path, scene_file, capsys, text, extra, message):
    (tmp_path / "points.csv").write_text(text)
    rc = main(
        [
            *"map --method protonet --scene".split(),
            str(scene_file),
            "--labels",
            str(tmp_path / "points.csv"),
            "--window",
            "32",
            "--out",
            str(tmp_path / "out"),
            "--task",
            "folder:/nonexistent",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--labels", "missing.csv"], "does not exist"),
        (["--scene", "missing.png"], "scene .* does not exist"),
        (["--window", "500"], "larger than the scene"),
        (["--stride", "40"], "larger than --window"),
        (["--method", "protonett"], "did you mean protonet"),
        (["--smooth-strength", "x"], "must be a number"),
    ],
)
def test_bad_map_arguments_are_one_line(tmp_path, scene_file, capsys, args, message):
    (tmp_path / "points.csv").write_text("x,y,label\n60,50,blob\n200,20,ground\n")
    base = {
        "--method": "protonet",
        "--scene": str(scene_file),
        "--labels": str(tmp_path / "points.csv"),
        "--window": "32",
        "--out": str(tmp_path / "out"),
        "--task": "folder:/nonexistent",
    }
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value if not value.endswith((".csv", ".png")) else str(tmp_path / value)
    rc = main(["map", *[item for pair in base.items() for item in pair]])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    import re

    assert re.search(message, err), err


def crashing_map(tmp_path, scene_file, capsys, method):
    """(exit status, stderr, the output folder) of `bench map --method METHOD` on the blob scene."""
    folder_like(tmp_path / "base", per_class=6)
    (tmp_path / "points.csv").write_text("x,y,label\n60,50,blob\n200,120,blob\n240,30,ground\n20,150,ground\n")
    out = tmp_path / "out"
    rc = main(
        [
            *("map", "--method", method, "--scene", str(scene_file), "--labels", str(tmp_path / "points.csv")),
            *("--window", "32", "--image-size", "16", "--preview", "100", "--quiet", "--out", str(out)),
            *("--task", f"folder:{tmp_path / 'base'}", "--data-dir", str(tmp_path), "--cache-dir", str(tmp_path / "c")),
        ]
    )
    err = capsys.readouterr().err
    assert "internal error" not in err and "Traceback" not in err, err
    return rc, err, out


@pytest.mark.parametrize("crasher, stage, detail", CRASHES)
def test_a_crashing_plugin_fails_the_map_in_one_line(tmp_path, scene_file, capsys, crasher, stage, detail):
    """A plugin that raises or exits in prepare, fit or predict fails in one line naming it and the stage, with
    bench run's exit status for a failed method, and leaves no outputs that could pass for a map."""
    rc, err, out = crashing_map(tmp_path, scene_file, capsys, crasher)
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 3 and line.startswith(f"error: method {crasher} failed in {stage}: ") and detail in line, err
    assert not out.exists() or not any(out.iterdir())


def test_bad_input_met_inside_a_mapping_method_is_still_bad_input(tmp_path, scene_file, capsys):
    rc, err, out = crashing_map(tmp_path, scene_file, capsys, "bad-input-prepare")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and errors == ["error: image /data/x.png cannot be decoded; replace or remove it"], err
    assert not out.exists()


# ------------------------------------------------------------------------------------------ crater scoring


def test_crater_window_rule():
    grid = WindowGrid(3744, 3744, 64, 32)
    # a 30 px crater centred at (1600, 1600) lies in the cell of the window starting at (1568, 1568)
    # a 400 px crater centred at (2500, 2500); a 5 px crater (below W/4) at (3000, 1000)
    boxes = np.array([[1585, 1585, 1615, 1615], [2300, 2300, 2700, 2700], [2997.5, 997.5, 3002.5, 1002.5]])
    crater, ambiguous = window_truth(grid, boxes)
    assert np.flatnonzero(crater).tolist() == [grid.index_of(1600, 1600)]
    x0, y0 = grid.origins()
    hit = grid.index_of(1600, 1600)
    assert (x0[hit], y0[hit]) == (1568, 1568)
    assert ambiguous[grid.index_of(1640, 1600)]  # next window right still holds the whole crater: ambiguous
    assert not ambiguous[grid.index_of(1700, 1600)] and not crater[grid.index_of(1700, 1600)]
    assert ambiguous[grid.index_of(2500, 2300)]  # on the big crater's rim
    assert ambiguous[grid.index_of(2500, 2500)]  # holds its centre
    assert not ambiguous[grid.index_of(2500, 2400)]  # floor, between centre and rim: non-crater
    assert ambiguous[grid.index_of(3000, 1000)]  # the small crater
    train, scored = regions(grid)
    assert not (train & scored).any() and (x0[train] + 64 <= 1248).all() and (x0[scored] >= 1248).all()
    labels = np.ones(grid.shape, int)  # everything non-crater...
    labels.ravel()[hit] = 0  # ...except the crater window
    labels.ravel()[grid.index_of(1700, 1600)] = 0  # and one false alarm
    s = score_labels(grid, boxes, labels, crater_class=0)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 0) and s["f1"] == pytest.approx(2 / 3)


def test_binary_scores():
    s = binary_scores([1, 1, 0, 0, 1], [1, 0, 1, 0, 1], [1, 1, 1, 1, 0])
    assert (s["tp"], s["fp"], s["fn"], s["scored"]) == (1, 1, 1, 4)
    assert s["precision"] == s["recall"] == s["f1"] == 0.5
    assert binary_scores([0, 0], [0, 0])["f1"] == 0.0


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.slow
def test_real_hirise_dunes_map(real_data_dir, tmp_path, capsys):
    """docs/mapping.md's HiRISE example: every labelled window is mapped back to its label, dunes are a minority."""
    from pathlib import Path

    scene = real_data_dir / "hirise-browse" / "ESP_073481_1350_RED.NOMAP.browse.jpg"
    points_file = Path(__file__).resolve().parents[1] / "docs" / "hirise-dunes-points.csv"
    rc = main(
        [
            *"map --method protonet --scene".split(),
            str(scene),
            "--labels",
            str(points_file),
            *"--window 128 --stride 128 --out".split(),
            str(tmp_path / "out"),
            "--data-dir",
            str(real_data_dir),
            "--quiet",
            "--preview",
            "300",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    grid = WindowGrid(*summary["scene_size"][::-1], summary["window"], summary["stride"])
    points = read_points(points_file, grid)
    labels = np.load(tmp_path / "out" / "labels.npy")
    assert np.array_equal(labels.ravel()[points.windows], points.labels)
    assert 0.03 < summary["area_fraction"]["dune"] < 0.25


def test_bench_craters_is_a_bench_command(tmp_path, capsys):
    rc = main(["craters", "score", "--map", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "not a bench map output folder" in err and err.count("\n") == 1, err
    rc = main(["craters", "score", "--map", str(tmp_path), "--crop", "1,2,3"])
    err = capsys.readouterr().err
    assert rc == 2 and "--crop must be x0,y0,x1,y1" in err, err


def test_without_the_gis_extra_gis_files_say_how_to_install_it(tmp_path, capsys, monkeypatch):
    for name in ("rasterio", "pyogrio", "shapely", "pyproj"):
        monkeypatch.setitem(__import__("sys").modules, name, None)  # import fails as if not installed
    pixels, _ = blob_scene()
    Image.fromarray(pixels).save(tmp_path / "scene.png")
    (tmp_path / "scene.jp2").write_bytes(b"not read")
    (tmp_path / "points.gpkg").write_bytes(b"not read")
    write_points(tmp_path / "points.csv", [(60, 50), (240, 30), (20, 150)], ["blob", "ground", "ground"])
    folder_like(tmp_path / "base", per_class=6)
    common = [
        "--window",
        "32",
        "--out",
        str(tmp_path / "out"),
        "--task",
        f"folder:{tmp_path / 'base'}",
        "--image-size",
        "32",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--quiet",
        "--preview",
        "150",
    ]
    for scene, labels in (("scene.jp2", "points.csv"), ("scene.png", "points.gpkg")):
        rc = main(
            [
                *"map --method protonet --scene".split(),
                str(tmp_path / scene),
                "--labels",
                str(tmp_path / labels),
                *common,
            ]
        )
        err = capsys.readouterr().err
        assert rc == 2 and "marsfsl[gis]" in err and err.count("\n") == 1, err
    rc = main(
        [
            *"map --method protonet --scene".split(),
            str(tmp_path / "scene.png"),
            "--labels",
            str(tmp_path / "points.csv"),
            *common,
        ]
    )
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "marsfsl[gis]" in summary["gis_outputs"] and "labels.tif" not in summary["files"]
    assert not summary["georeferenced"] and summary["crs"] is None


@pytest.mark.slow
def test_real_bench_craters_run_appends_and_resumes(real_data_dir, tmp_path, capsys):
    """bench craters run on the CTX block (coarse windows, a tiny base task): rows appended under the lock, a
    second identical run maps nothing and appends nothing, --fresh sets the old rows aside."""
    folder_like(tmp_path / "base", per_class=6)
    args = [
        *"craters run --method protonet --shots 3 --seeds 0,1 --window 128 --stride 128 --image-size 32 --task".split(),
        f"folder:{tmp_path / 'base'}",
        "--data-dir",
        str(real_data_dir),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(tmp_path / "out" / "ctx"),
        "--quiet",
    ]
    assert main(args) == 0, capsys.readouterr().err
    rows = (tmp_path / "out" / "ctx.csv").read_text()
    assert rows.count("\n") == 1 + 2 * 2  # header + (seed x smoothing)
    table = (tmp_path / "out" / "ctx.md").read_text()
    assert "| protonet | 3 | none |" in table and "| protonet | 3 | mrf |" in table
    capsys.readouterr()
    assert main(args) == 0
    assert (tmp_path / "out" / "ctx.csv").read_text() == rows
    assert "map in" not in capsys.readouterr().err
    # --fresh recomputes, and the rows it replaces move aside: results are never deleted
    assert main(args + ["--fresh"]) == 0
    assert (tmp_path / "out" / "ctx.set-aside.csv").read_text() == rows
    assert (tmp_path / "out" / "ctx.csv").read_text().count("\n") == 1 + 2 * 2


def test_a_method_returning_bad_scores_fails_the_map_in_one_line(tmp_path):
    """Non-finite scores must fail the map, not turn into windows 'without a class' (NaN probabilities)."""
    from benchmark.mapping.map import classify_windows
    from benchmark.scoring import MethodFailed

    pixels, _ = blob_scene()
    Image.fromarray(pixels).save(tmp_path / "scene.png")
    scene = load_scene(tmp_path / "scene.png")
    grid = WindowGrid(scene.height, scene.width, 64, 64)
    write_points(tmp_path / "points.csv", [(60, 50), (240, 30)], ["blob", "ground"])
    points = read_points(tmp_path / "points.csv", grid)
    task = make_task(tmp_path / "base", n_classes=2, groups_per_class=2, per_group=2, base_groups=1)
    windows = scene_windows(task, scene, grid, Cache(tmp_path / "cache"), Settings(image_size=32, device="cpu"))

    class NaNMethod:
        def fit(self, *args):
            pass

        def predict(self, indices):
            scores = np.zeros((len(indices), 2))
            scores[0, 0] = np.nan
            return scores

    with pytest.raises(MethodFailed, match="^method nan failed in predict: returned 1 non-finite scores"):
        classify_windows(NaNMethod(), windows, points, np.random.default_rng(0), label="nan")


def test_the_crater_command_defaults_are_the_crater_rule_s_grid():
    from benchmark.commands.craters import GRID, SCORED_PART
    from tasks.datasets.ctx_murray import STRIDE, TILE, TRAIN_X, WINDOW

    assert GRID == (WINDOW, STRIDE) and SCORED_PART == (TRAIN_X, 0, 3 * TILE, 3 * TILE)


def test_craters_score_reads_the_scene_once_for_its_figure(tmp_path, capsys, monkeypatch):
    """`bench craters score --figure` scores and draws from one read of the nine CTX tiles."""
    import tasks.datasets.ctx_murray as ctx
    from tests.test_ctx_craters_task import ctx_scene_like

    ctx_scene_like(tmp_path / "data")
    grid = WindowGrid(3744, 3744, 1248, 1248)
    (tmp_path / "map").mkdir()
    summary = {"scene_size": [3744, 3744], "window": 1248, "stride": 1248, "classes": ["crater", "other"]}
    (tmp_path / "map" / "summary.json").write_text(json.dumps({**summary, "smoothing": "none"}))
    np.save(tmp_path / "map" / "labels.npy", np.zeros(grid.n, dtype=np.int64))
    reads = []
    load_ctx = ctx.load_ctx
    monkeypatch.setattr(ctx, "load_ctx", lambda data_dir: reads.append(data_dir) or load_ctx(data_dir))
    figure = tmp_path / "figure.png"
    argv = ["craters", "score", "--map", str(tmp_path / "map"), "--data-dir", str(tmp_path / "data")]
    assert main([*argv, "--figure", str(figure), "--size", "64"]) == 0, capsys.readouterr().err
    assert figure.is_file() and len(reads) == 1
