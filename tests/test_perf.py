"""`bench perf` prints its table on a tiny generated task (a smoke test: figures, not timings, are checked)."""

import shutil
import sys

import pytest
import torch
from test_sdft import make_tiny_task

from benchmark.cli import main
from benchmark.perf import easyfsl_throughput, harness_throughput
from methods.base import Context
from methods.cache import Cache
from methods.registry import create_method


def test_protonet_matches_easyfsl_on_the_same_features_and_episodes(tmp_path):
    pytest.importorskip("easyfsl")
    task = make_tiny_task(tmp_path / "data", n_classes=4, groups_per_class=5)
    ctx = Context(task, Cache(tmp_path / "cache"), image_size=32)
    method = create_method("protonet")
    method.prepare(ctx)
    episodes = task.episodes(3, 2, 3, 30, seed=0)
    _, ours = harness_throughput(method, episodes, task.class_names)
    _, theirs = easyfsl_throughput(torch.from_numpy(ctx.features()), task.table.labels, episodes)
    assert list(ours) == list(theirs)


def test_bench_perf_prints_one_table(tmp_path, capsys, monkeypatch):
    """An install without the [ray] extra (`import ray` fails) gets every other row and a note for the Ray row."""
    pytest.importorskip("easyfsl")
    monkeypatch.setitem(sys.modules, "ray", None)
    make_tiny_task(tmp_path / "data", n_classes=5, groups_per_class=10, per_group=8)
    code = main(
        [
            "perf",
            "--task",
            f"folder:{tmp_path / 'data'}",
            *"--episodes 5 --extraction-images 8 --memory-shots 1 --step1-batches 2 --image-size 32 --warm-method protonet --memory-method protonet --transductive-episodes 3 --cache-dir".split(),
            str(tmp_path / "cache"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("│")]  # unwrapped when not a terminal
    for measure in (
        "episodes/s, protonet",
        "episodes/s, simpleshot",
        "episodes/s, linear-probe",
        "extraction from files",
        "warm start",
        "peak memory",
        *(f"episodes/s, {name} (transductive)" for name in ("bd-cspn", "laplacianshot", "tim", "pt-map")),
    ):
        assert sum(measure in row for row in rows) == 1, measure
    for name, cls in (("bd-cspn", "BDCSPN"), ("laplacianshot", "LaplacianShot"), ("tim", "TIM"), ("pt-map", "PTMAP")):
        row = next(row for row in rows if f"{name} (transductive)" in row)
        assert f"easyfsl {cls} " in row and "accuracy ours - easyfsl" in row  # the rest may wrap
    step1 = [row for row in rows if "SDFT step 1 training" in row]
    assert len(step1) == 2  # against a bare loop on all cores (torch's threads), and the one-thread pair
    assert "torch's" in step1[0] and "one thread" in step1[1]
    assert "same accuracy as easyfsl in all 5 episodes" in out
    warm = next(row for row in rows if "warm start" in row)
    assert "whole process" in warm and "nan" not in warm  # the child noted its first finished episode
    assert not any("Ray executor" in row for row in rows)
    if shutil.which("bwrap"):  # the sandbox's start-up and per-episode cost, side by side with local
        for measure in (
            "--isolate start-up, protonet",
            "episodes/s under --isolate, protonet",
            "--isolate start-up, sdft-no-step1",
            "episodes/s under --isolate, sdft-no-step1",
        ):
            assert sum(measure in row for row in rows) == 1, measure
        assert "ANSWERS DIFFER" not in out
    assert "No Ray row: Ray is not installed" in " ".join(out.split())  # the table's caption says why


def test_bench_perf_ray_method_named_without_ray_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    code = main(["perf", "--task", f"folder:{tmp_path / 'missing'}", "--ray-method", "sdft"])  # before any work
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--ray-method sdft" in err and "pip install -e '.[ray]'" in err


def test_child_peak_memory_is_its_own_not_the_parents():
    import os

    import numpy as np

    from benchmark.perf import bench_subprocess

    held = np.ones(3 * 2**27)  # 3 GiB resident in this process, the parent
    seconds, first, peak = bench_subprocess(["list"], dict(os.environ))
    assert held[-1] == 1.0
    assert 0 < peak < 2 * 2**30, f"child peak {peak / 2**30:.2f} GiB"  # bench list needs well under 2 GiB
    assert first != first  # no episode ran: nan


def test_without_ray_the_default_row_is_left_out_with_a_note_and_a_named_one_is_an_error(monkeypatch):
    """Ray not installed (`import ray` fails): the Ray row is left out and said so, before any work."""
    import argparse

    from benchmark.commands.perf import ray_row
    from common.errors import UserError

    monkeypatch.setitem(sys.modules, "ray", None)
    notes = []
    method, left_out = ray_row(argparse.Namespace(ray_method=None), notes.append)
    assert method == "none" and "Ray is not installed" in left_out and notes == [f"no Ray row: {left_out}"]
    assert ray_row(argparse.Namespace(ray_method="none"), notes.append) == ("none", None)
    with pytest.raises(UserError, match="--ray-method sdft: Ray is not installed"):
        ray_row(argparse.Namespace(ray_method="sdft"), notes.append)


def test_bench_perf_hands_its_flags_to_run_perf(tmp_path, monkeypatch):
    """Every flag of `bench perf` reaches the PerfOptions field of its name (--memory-method: memory_methods);
    a field without a flag keeps its default."""
    import benchmark.perf
    from benchmark.perf_options import PerfOptions

    seen = {}

    def fake_run_perf(settings, options, work_dir, log=print):
        seen["options"] = options
        return []

    monkeypatch.setattr(benchmark.perf, "run_perf", fake_run_perf)
    monkeypatch.setattr(benchmark.perf, "ray_missing", lambda: None)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["perf", "--data-dir", str(tmp_path), "--episodes", "7", "--extraction-images", "9"]
    argv += ["--warm-method", "protonet", "--memory-method", "knn", "--memory-method", "protonet"]
    argv += ["--memory-shots", "1,5"]
    argv += ["--memory-episodes", "2", "--ray-method", "protonet", "--ray-episodes", "3", "--step1-batches", "2"]
    argv += ["--transductive-episodes", "0"]
    assert main(argv) == 0
    assert seen["options"] == PerfOptions(
        episodes=7,
        extraction_images=9,
        warm_method="protonet",
        memory_methods=("knn", "protonet"),
        memory_shots="1,5",
        memory_episodes=2,
        ray_method="protonet",
        ray_episodes=3,
        step1_batches=2,
        transductive_episodes=0,
    )


def test_the_cold_job_row_times_a_run_with_an_empty_cache_phase_by_phase(tmp_path):
    from benchmark.perf import cold_job, phase_seconds

    lines = "\n".join(
        [
            "BAR\t10\t12.5\t1\t3\tdecoding 30 images",
            "BAR\t13\t20\t3\t16\tsdft step 1: epoch 1/6, batches of 32",
            "BAR\t20\t21\t16\t18\tsdft step 1: epoch 1 held-out images",
            "BAR\t21\t23\t18\t22\tefficientnet_lite0 features",
            "BAR\t23\t24\t22\t23\tsdft: activations entering the top, 9 rows outside the base pool",
            "BAR\t24\t30\t23\t30\tsdft 5-shot",
            "something else",
            "CPU\t40",
        ]
    )
    assert phase_seconds(lines) == {
        "decode": (2.5, 2.0),
        "step 1": (8.0, 15.0),
        "features": (3.0, 5.0),
        "episodes": (6.0, 7.0),
        "other": (0.0, 11.0),
    }
    make_tiny_task(tmp_path / "data", n_classes=5, groups_per_class=10, per_group=8)  # 5-way 1-shot 15-query
    (tmp_path / "work").mkdir()
    figures = cold_job(
        f"folder:{tmp_path / 'data'}",
        tmp_path,
        tmp_path / "work",
        3,
        log=lambda m: None,
        methods=("protonet",),
        shots="1",
    )
    assert [f.what.strip() for f in figures[1:]] == ["decode", "step 1", "features", "episodes", "other"]
    total, parts = figures[0].value, {f.what.strip(): f.value for f in figures[1:]}
    assert "empty cache" in figures[0].what and "load average" in figures[0].note
    assert all("CPU time" in f.reference for f in figures) and "peak memory 0.00 GB" not in figures[0].note
    assert parts["decode"] > 0 and parts["features"] > 0 and parts["episodes"] > 0 and parts["step 1"] == 0
    assert sum(parts.values()) == pytest.approx(total)
    assert (tmp_path / "work" / "cache" / "features").is_dir()  # the cache it ran with, empty before
