"""`--isolate`: every method in a bubblewrap sandbox (benchmark/sandbox.py), with the same rows as in-process."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import cheating_plugins  # noqa: F401  (registers sandbox-prober)
import pandas as pd
import pytest
from fakes_methods import make_task

from benchmark.cli import main
from benchmark.protocols.episodes import run_benchmark
from benchmark.results import read_results
from benchmark.runner import MethodSpec, RunConfig

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
VARYING = ["seconds", "timestamp", "isolated"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A class-by-class folder data set (the generated colour/stripe images, one folder per class)."""
    root = tmp_path_factory.mktemp("isolate") / "data"
    task = make_task(root / "flat", n_classes=3, groups_per_class=4, per_group=3)
    for path, label in zip(task.table.paths, task.table.labels):
        target = root / "set" / f"class{label}" / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return root / "set"


def config(data, tmp_path, methods, isolate, out="rows.csv", **kw):
    return RunConfig(
        methods=[MethodSpec.parse(m) for m in methods],
        task=f"folder:{data}",
        shots=[1, 2],
        n_way=3,
        n_query=3,
        episodes=4,
        image_size=32,
        data_dir=data,
        cache_dir=tmp_path / "cache",
        out=tmp_path / out,
        isolate=isolate,
        **kw,
    )


@needs_bwrap
def test_builtins_give_the_same_rows_isolated(data, tmp_path):
    methods = ["protonet", "sdft:epochs=1,batch_size=8,steps=5,val_folds=2"]
    local = run_benchmark(config(data, tmp_path, methods, False, "local.csv"))
    isolated = run_benchmark(config(data, tmp_path, methods, True, "isolated.csv"))
    assert len(local) == len(isolated) == 2 * 2 * 4
    assert (isolated["isolated"] == 1).all() and (local["isolated"] == 0).all()
    key = ["method", "shots", "episode"]
    pd.testing.assert_frame_equal(
        local.drop(columns=VARYING).sort_values(key).reset_index(drop=True),
        isolated.drop(columns=VARYING).sort_values(key).reset_index(drop=True),
    )


@needs_bwrap
def test_the_sandbox_holds_no_data_results_cache_home_network_or_memory(data, tmp_path):
    # the home folder may hold the Python installation (pyenv), which the sandbox shows; nothing else of it
    python = Path(sys.base_prefix).resolve()
    home = [str(p) for p in Path.home().iterdir() if p != python and p not in python.parents][:5]
    secrets = [str(data), str(tmp_path), str(Path(data).parent), *home]
    spec = "sandbox-prober:paths=" + "|".join(secrets)
    failures = []
    run_benchmark(config(data, tmp_path, [spec], False), failures=failures)  # in-process it reaches them all
    assert failures and "reached" in str(failures[0]), failures
    failures = []
    rows = run_benchmark(config(data, tmp_path, [spec], True, "isolated.csv"), failures=failures)
    assert not failures, failures
    assert len(rows) == 2 * 4


@needs_bwrap
def test_a_forged_reply_neither_sets_the_seconds_nor_breaks_the_run(data, tmp_path):
    """A sandboxed method's own code writes its replies, so they cannot be believed: a row's seconds are what the
    harness timed (not the zero or the garbage it claims), and a reply declaring a petabyte fails that method
    alone, in one line, while the next method runs."""
    started = time.perf_counter()
    failures = []
    methods = ["forged-reply:forge=fast", "forged-reply:forge=garbage", "forged-reply:forge=huge", "protonet"]
    rows = run_benchmark(config(data, tmp_path, methods, True), failures=failures)
    elapsed = time.perf_counter() - started
    assert [f.label for f in failures] == ["forged-reply:forge=huge"], failures
    assert "replied with something that is not a reply" in str(failures[0]), failures
    assert sorted(set(rows["method"])) == ["forged-reply:forge=fast", "forged-reply:forge=garbage", "protonet"]
    seconds = rows["seconds"].astype(float)
    assert (seconds > 0).all() and seconds.sum() < elapsed, rows[["method", "seconds"]]


def test_isolate_without_bubblewrap_is_one_line(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    code = main(
        [
            "run",
            "--task",
            f"folder:{data}",
            *"--method protonet --isolate --data-dir".split(),
            str(data),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "r.csv"),
            "--image-size",
            "32",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "apt-get install bubblewrap" in err[0], err
    assert not (tmp_path / "r.csv").exists()


def test_isolate_refuses_ray(data, tmp_path, capsys):
    code = main(
        [
            "run",
            "--task",
            f"folder:{data}",
            *"--method protonet --isolate --executor ray --data-dir".split(),
            str(data),
            "--out",
            str(tmp_path / "r.csv"),
        ]
    )
    assert code == 2 and "--executor local" in capsys.readouterr().err


@needs_bwrap
def test_a_plugin_failing_in_its_sandbox_is_named_and_the_others_run(data, tmp_path):
    failures = []
    rows = run_benchmark(config(data, tmp_path, ["sandbox-prober:paths=/", "protonet"], True), failures=failures)
    assert len(failures) == 1 and "sandbox-prober" in str(failures[0]) and "reached /" in str(failures[0])
    assert set(rows["method"]) == {"protonet"}
    assert set(read_results(tmp_path / "rows.csv")["method"]) == {"protonet"}


@needs_bwrap
def test_fixed_k_gives_the_same_rows_isolated(data, tmp_path):
    from benchmark.fixedk import FixedKConfig
    from benchmark.protocols.fixedk import run_fixedk_benchmark

    def fixed_k(isolate, out):
        return run_fixedk_benchmark(
            FixedKConfig(
                methods=[MethodSpec.parse("protonet"), MethodSpec.parse("knn")],
                task=f"folder:{data}",
                shots=[2],
                data_dir=data,
                cache_dir=tmp_path / "cache",
                out=tmp_path / out,
                image_size=32,
                seeds=[0, 1],
                isolate=isolate,
            )
        )

    local, isolated = fixed_k(False, "local.csv"), fixed_k(True, "isolated.csv")
    assert len(local) == len(isolated) == 2 * 2 and (isolated["isolated"] == 1).all()
    key = ["method", "shots", "seed"]
    pd.testing.assert_frame_equal(
        local.drop(columns=VARYING).sort_values(key).reset_index(drop=True),
        isolated.drop(columns=VARYING).sort_values(key).reset_index(drop=True),
    )
