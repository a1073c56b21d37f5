"""`bench map --isolate` and `bench craters run --isolate` (benchmark/mapping/isolated.py): the mapping method in
a bubblewrap sandbox.

In-process a plugin can read the disk: `cheat-map-disk` (tests/cheating_plugins.py) finds where each window
lies from the harness's cache (grid-order features) or the scene file, and labels it from the Robbins crater
file that scores the map; it scores a perfect map. In the sandbox none of those files is there, and it scores
what its constant answer scores. Every built-in gives the same map and crater rows with and without --isolate.
"""

from __future__ import annotations

import json
import shutil
import tracemalloc

import cheating_plugins  # noqa: F401  (registers cheat-map-disk and sandbox-prober)
import crashing_plugins  # noqa: F401  (registers the crashing plugins)
import numpy as np
import pytest
from crashing_plugins import CRASHES
from fakes import folder_like
from PIL import Image
from test_crater_rows import crater_run
from test_ctx_craters_task import ctx_scene_like

from benchmark.cli import main
from benchmark.method_child import load_handed
from benchmark.runner import MethodSpec
from benchmark.sandbox import Placement, handed_folder
from methods.base import Handed
from methods.concat import ConcatRows

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
BUILTINS = ["protonet", "linear-probe", "bd-cspn", "finetune:steps=2"]
VARYING = {"map_seconds", "prepare_seconds", "git_commit", "isolated"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A base task folder and the generated CTX scene (craters of W/4 for 256 px windows)."""
    root = tmp_path_factory.mktemp("map-isolate")
    folder_like(root / "base", per_class=6)
    ctx_scene_like(root / "data", diameter=64)
    return root


def cheat_specs(data, work) -> dict[str, str]:
    """The disk-reading plugin with each way it finds where windows lie (the scene file `bench craters run`
    writes into its work folder)."""
    truth = data / "data" / "ctx-murray-craters" / "selected_craters_XY.txt"
    grid = "window=256,stride=256"
    return {
        "cache": f"cheat-map-disk:truth={truth},cache={data / 'cache'},{grid}",
        "scene": f"cheat-map-disk:truth={truth},scene={work / 'ctx-scene.png'},{grid}",
    }


# windows of the noise scene as 16 px images are all but uniform grey (two distinct images); at 64 px each is
# its own, so that a window's pixels or features could tell which window it is
DISTINCT = ("--image-size", "64")


def unsmoothed(rows, method) -> dict:
    label = MethodSpec.parse(method).label
    (row,) = [r for r in rows if r["method"] == label and r["smoothing"] == "none"]
    return row


@needs_bwrap
def test_a_plugin_reading_the_disk_maps_perfectly_in_process_and_finds_nothing_isolated(data, tmp_path, capsys):
    work = tmp_path / "here" / "work"  # crater_run's --work: beside --out
    specs = cheat_specs(data, work)
    methods = [a for spec in specs.values() for a in ("--method", spec)] + list(DISTINCT)
    rc, err, rows = crater_run(data, tmp_path / "here" / "ctx", capsys, *methods)
    assert rc == 0, err
    for spec in specs.values():  # the crater file, the windows' places from the cache or the scene: a perfect map
        row = unsmoothed(rows, spec)
        assert float(row["f1"]) == float(row["strict_f1"]) == 1.0 and int(row["positives"]) > 0, row

    rc, err, isolated = crater_run(data, tmp_path / "isolated" / "ctx", capsys, *methods, "--isolate")
    assert rc == 0, err
    for spec in specs.values():  # nothing found: its constant answer, every window a crater
        row = unsmoothed(isolated, spec)
        assert row["isolated"] == "1" and float(row["predicted_crater_fraction"]) == 1.0, row
        assert float(row["precision"]) == int(row["positives"]) / int(row["scored"])  # chance: the crater share

    # and none of the paths it would read is there, nor the data, work, results or cache folders
    paths = [str(p) for p in (data / "data", data / "cache", work, tmp_path / "prober", tmp_path)]
    paths += [s.split("=")[1] for spec in specs.values() for s in spec.split(",")[:2]]
    prober = ("--method", "sandbox-prober:paths=" + "|".join(paths), *DISTINCT)
    rc, err, _ = crater_run(data, tmp_path / "prober" / "ctx", capsys, *prober)
    assert rc != 0 and "reached" in err, err
    rc, err, probed = crater_run(data, tmp_path / "prober" / "ctx", capsys, *prober, "--isolate")
    assert rc == 0 and len(probed) == 2, err
    # what it does reach in its sandbox (the root of the sandbox's file system) fails it, named
    rc, err, _ = crater_run(data, tmp_path / "root" / "ctx", capsys, "--method", "sandbox-prober:paths=/", "--isolate")
    assert rc != 0 and "method sandbox-prober:paths=/ failed in prepare in its sandbox" in err and "reached /" in err


@needs_bwrap
def test_builtins_give_the_same_crater_rows_isolated(data, tmp_path, capsys):
    methods = [a for m in BUILTINS for a in ("--method", m)] + list(DISTINCT)
    rc, err, here = crater_run(data, tmp_path / "here" / "ctx", capsys, *methods)
    assert rc == 0 and len(here) == 2 * len(BUILTINS), err
    rc, err, isolated = crater_run(data, tmp_path / "isolated" / "ctx", capsys, *methods, "--isolate")
    assert rc == 0 and len(isolated) == len(here), err
    assert {r["isolated"] for r in here} == {"0"} and {r["isolated"] for r in isolated} == {"1"}
    assert [{k: v for k, v in r.items() if k not in VARYING} for r in isolated] == [
        {k: v for k, v in r.items() if k not in VARYING} for r in here
    ]
    # four different maps (64 px windows of the noise scene are each their own): a comparison of every number
    assert len({unsmoothed(here, m)["f1"] for m in BUILTINS}) == len(BUILTINS)


def blob_scene(root):
    """A 256 x 192 scene of noise with three striped blobs, two of them labelled."""
    rng = np.random.default_rng(3)
    pixels = rng.normal(90, 20, (192, 256))
    for cx, cy in ((60, 50), (200, 120), (120, 130)):
        patch = np.full((40, 40), 215.0)
        patch[::4] = 120
        pixels[cy - 20 : cy + 20, cx - 20 : cx + 20] = patch
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / "scene.png")
    (root / "points.csv").write_text(
        "x,y,label\n60,50,blob\n200,120,blob\n240,30,ground\n20,150,ground\n150,40,ground\n"
    )


def bench_map(root, method, out, *extra):
    return main(
        [
            *"map --window 32 --stride 16 --image-size 16 --quiet --preview 100 --task".split(),
            f"folder:{root / 'base'}",
            *("--method", method, "--scene", str(root / "scene.png"), "--labels", str(root / "points.csv")),
            *("--data-dir", str(root), "--cache-dir", str(root / "cache"), "--out", str(out), *extra),
        ]
    )


@needs_bwrap
@pytest.mark.parametrize("method", BUILTINS)
def test_builtins_give_the_same_map_isolated(data, tmp_path, capsys, method):
    root = tmp_path
    shutil.copytree(data / "base", root / "base")
    blob_scene(root)
    assert bench_map(root, method, root / "here") == 0, capsys.readouterr().err
    assert bench_map(root, method, root / "isolated", "--isolate") == 0, capsys.readouterr().err
    for name in ("probabilities.npy", "labels.npy", "label_map.png", "overlay.png"):
        assert (root / "here" / name).read_bytes() == (root / "isolated" / name).read_bytes(), name
    here, isolated = (json.loads((root / d / "summary.json").read_text()) for d in ("here", "isolated"))
    assert here.pop("isolated") is False and isolated.pop("isolated") is True
    assert set(here.pop("timings")) >= {"prepare_s", "fit_s", "predict_s"}
    assert set(isolated.pop("timings")) >= {"prepare_s", "fit_predict_s"}
    assert here == isolated


def test_a_map_s_windows_are_handed_as_files_a_block_at_a_time(tmp_path):
    """The window pixels of a map go to the sandbox's folder as a file of their own, written without a copy of
    them all in memory, and come back as read-only memory maps: the same rows, never all in memory."""
    windows = np.lib.format.open_memmap(tmp_path / "windows.npy", "w+", np.uint8, (2000, 3, 64, 64))
    windows[:] = np.arange(2000, dtype=np.uint8)[:, None, None, None]  # 24 MiB
    windows.flush()
    del windows
    mapped = np.load(tmp_path / "windows.npy", mmap_mode="r")
    base = np.full((5, 3, 64, 64), 7, np.uint8)
    given = Handed(
        "task", 2005, np.arange(5), np.zeros(5, np.int64), np.array(["g"] * 5, object), np.arange(2), {},
        images=ConcatRows([base, mapped]),
    )  # fmt: skip
    tracemalloc.start()
    folder = handed_folder({"method": "x"}, given, Placement(True, tmp_path / "cache"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 << 20, peak  # one 16 MiB block at most, not the 24 MiB of windows
    _, back = load_handed(str(folder))
    assert isinstance(back.images, ConcatRows) and back.images.shape == (2005, 3, 64, 64)
    assert all(isinstance(p, np.memmap) and not p.flags.writeable for p in back.images.parts)
    rows = np.array([0, 4, 5, 6, 2004])
    assert np.array_equal(back.images[rows], given.images[rows])
    shutil.rmtree(folder)


@pytest.mark.parametrize("command", ["map", "craters"])
def test_isolate_without_bubblewrap_is_one_line(data, tmp_path, monkeypatch, capsys, command):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    if command == "map":
        blob_scene(tmp_path)
        shutil.copytree(data / "base", tmp_path / "base")
        code, out = bench_map(tmp_path, "protonet", tmp_path / "out", "--isolate"), tmp_path / "out"
        err = capsys.readouterr().err
    else:
        code, err, _ = crater_run(data, tmp_path / "out" / "ctx", capsys, "--method", "protonet", "--isolate")
        out = tmp_path / "out" / "ctx.csv"
    assert code == 2 and err.count("\n") == 1 and "apt-get install bubblewrap" in err, err
    assert not out.exists()


# fit and predict are one request there; scores that cannot be scored are predict's, as in-process
ISOLATED_STAGE = {"crash-prepare": "prepare", "exit-predict": "fit or predict", "nan-scores": "predict"}


@needs_bwrap
@pytest.mark.parametrize("crasher, stage, detail", [c for c in CRASHES if c[0] in ISOLATED_STAGE])
def test_a_crashing_plugin_fails_alone_isolated(data, tmp_path, capsys, crasher, stage, detail):
    """In its sandbox a crashing plugin fails as in-process (tests/test_crater_rows.py): one line naming it and
    the stage, the method after it still maps, exit status 3."""
    out = tmp_path / "out" / "ctx"
    rc, err, rows = crater_run(data, out, capsys, "--method", crasher, "--method", "protonet", "--isolate")
    assert "internal error" not in err and "Traceback" not in err, err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith(
        f"error: method {crasher} failed in {ISOLATED_STAGE[crasher]} in its sandbox at K=2, draw seed 0: "
    ), err
    assert detail in line and rc == 3, err
    assert [(r["method"], r["smoothing"]) for r in rows] == [("protonet", "none"), ("protonet", "mrf")], err


@pytest.mark.parametrize("isolate", [False, True])
def test_a_mapping_method_that_reads_its_windows_unannounced_is_refused(data, tmp_path, capsys, isolate):
    """Windows of a crater map are asked again one at a time (a fresh process in-process, a fresh fork of the
    sandbox isolated): a method that reads the set of windows it is asked without saying it is transductive
    (cheat-query-stats) fails in one line, and the honest method after it still maps."""
    if isolate and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    methods = ["--method", "cheat-query-stats", "--method", "protonet", *DISTINCT, *(["--isolate"] if isolate else [])]
    rc, err, rows = crater_run(data, tmp_path / "out" / "ctx", capsys, *methods)
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 3 and "method cheat-query-stats failed in the check of its answers" in line, err
    assert "answers depend on the other queries it is asked with, yet it says it is inductive" in line, err
    assert {r["method"] for r in rows} == {"protonet"}, err
