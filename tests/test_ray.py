"""The Ray executor on a local Ray instance of two worker processes (started once, for this module only):
rows identical to the local executor's; a worker killed mid-run is retried and every row is there once."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import fakes_ray  # noqa: F401  (registers the die-once plugin method)
import pytest
from fakes_reliability import make_folder_dataset

from benchmark.cli import main
from benchmark.results import KEY

ray = pytest.importorskip("ray")

COMPARED = [*KEY, *"classes accuracy macro_f1 class_accuracy n_query".split()]


@pytest.fixture(scope="module")
def local_ray():
    tests = str(Path(__file__).resolve().parent)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": tests, "OMP_NUM_THREADS": "1"}},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("ray") / "data", per_class=16)


def run(data, out, cache, *methods, executor="local", episodes=8):
    argv = [
        "run",
        "--task",
        f"folder:{data}",
        *"--shots 1,2 --ways 3 --queries 2 --episodes".split(),
        str(episodes),
        *"--image-size 32 --quiet --cache-dir".split(),
        str(cache),
        "--out",
        str(out),
        "--executor",
        executor,
    ]
    for m in methods:
        argv += ["--method", m]
    return main(argv)


def rows(path: Path) -> list[tuple]:
    with open(path, newline="") as f:
        return sorted(tuple(r[c] for c in COMPARED) for r in csv.DictReader(f))


def test_ray_rows_equal_local_rows(local_ray, data, tmp_path, capsys):
    methods = ("protonet", "finetune:steps=2")
    assert run(data, tmp_path / "local.csv", tmp_path / "cache", *methods) == 0
    assert run(data, tmp_path / "ray.csv", tmp_path / "cache", *methods, executor="ray") == 0
    local, spread = rows(tmp_path / "local.csv"), rows(tmp_path / "ray.csv")
    assert len(local) == 2 * 2 * 8 and spread == local
    err = capsys.readouterr().err
    assert "ray: 2 worker slots" in err and "worker(s) answered" in err and "ep/s" in err


def test_a_killed_worker_is_retried_and_every_row_is_there_once(local_ray, data, tmp_path):
    marker = tmp_path / "killed"
    assert (
        run(data, tmp_path / "ray.csv", tmp_path / "cache", f"die-once:marker={marker}", executor="ray", episodes=12)
        == 0
    )
    assert marker.exists()  # a worker process did die
    assert run(data, tmp_path / "local.csv", tmp_path / "cache", f"die-once:marker={marker}", episodes=12) == 0
    killed, local = rows(tmp_path / "ray.csv"), rows(tmp_path / "local.csv")
    assert len(killed) == 2 * 12 and len(set(killed)) == len(killed) and killed == local


def test_without_ray_the_executor_says_how_to_install_it(data, tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("no ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert run(data, tmp_path / "r.csv", tmp_path / "cache", "protonet", executor="ray") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install -e '.[ray]'" in err


def test_fixedk_on_ray_equals_local(local_ray, data, tmp_path):
    def fixedk(out, executor):
        return main(
            [
                "fixedk",
                "--task",
                f"folder:{data}",
                *"--shots 1 --seeds 0-5 --image-size 32 --quiet --cache-dir".split(),
                str(tmp_path / "cache"),
                "--out",
                str(out),
                *"--method protonet --method finetune:steps=2 --executor".split(),
                executor,
            ]
        )

    assert fixedk(tmp_path / "local.csv", "local") == 0 and fixedk(tmp_path / "ray.csv", "ray") == 0
    compared = [*"method shots seed device config n_train n_test accuracy weighted_f1 macro_f1".split()]

    def read(path):
        with open(path, newline="") as f:
            return sorted(tuple(r[c] for c in compared) for r in csv.DictReader(f))

    local, spread = read(tmp_path / "local.csv"), read(tmp_path / "ray.csv")
    assert len(local) == 2 * 6 and spread == local


@pytest.mark.parametrize("command", ["run", "fixedk"])
def test_exit_or_keyboard_interrupt_on_a_worker_fails_that_method_only(local_ray, data, tmp_path, capsys, command):
    """On a worker as on the driver: named in one line, the other method runs, exit 3 (not `internal error`, a
    worker restarted four times, or a cancelled task)."""
    out = tmp_path / "r.csv"
    for method, detail in (
        ("exits-in-fit", "SystemExit: 0 (it tried to end the process; a method returns scores or raises)"),
        ("interrupts-in-fit", "KeyboardInterrupt"),
    ):
        argv = [
            command,
            "--task",
            f"folder:{data}",
            *"--shots 1 --image-size 32 --quiet --cache-dir".split(),
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--method",
            method,
            *"--method protonet --executor ray".split(),
        ]
        argv += ["--seeds", "0-3"] if command == "fixedk" else [*"--ways 3 --queries 2 --episodes 4".split()]
        assert main(argv) == 3
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error", "internal"))]
        assert (
            len(err) == 1 and err[0].startswith(f"error: method {method} failed in ") and err[0].endswith(f": {detail}")
        ), err
    with open(out, newline="") as f:
        assert {r["method"] for r in csv.DictReader(f)} == {"protonet"}


def test_perf_row_of_ray_against_local_prints(local_ray, tmp_path):
    from test_sdft import make_tiny_task

    from benchmark.perf import ray_figure
    from methods.base import Context
    from methods.cache import Cache

    task = make_tiny_task(tmp_path / "data", n_classes=5, groups_per_class=6, per_group=6)
    figure = ray_figure(
        task, Context(task, Cache(tmp_path / "cache"), image_size=32), "sdft-no-step1", 12, shape=(3, 2, 3)
    )
    assert "Ray executor (2 local workers)" in figure.what and figure.value > 0 and figure.ratio > 0
    assert "the same rows" in figure.note and "local executor" in figure.reference


def test_ray_refuses_an_accelerator_in_one_line(data, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code = main(
        [
            "run",
            "--task",
            f"folder:{data}",
            *"--method protonet --executor ray --device cuda --out".split(),
            str(tmp_path / "r.csv"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "--executor ray runs its workers on CPUs" in err


def spied(report: Path) -> list[dict]:
    return [json.loads(line) for line in report.read_text().splitlines()]


def test_workers_receive_no_query_labels_and_the_driver_scores(local_ray, data, tmp_path):
    report = tmp_path / "ray.jsonl"
    assert (
        run(
            data,
            tmp_path / "ray.csv",
            tmp_path / "cache",
            f"label-spy:report={report}",
            f"label-spy-batched:report={report}",
            executor="ray",
            episodes=4,
        )
        == 0
    )
    seen = spied(report)
    assert {s["stage"] for s in seen} == {"fit", "predict", "predict_batch"}
    assert all(s["pid"] != os.getpid() for s in seen)  # answered on the workers
    assert [s for s in seen if s["found"]] == []
    assert all("BlindEpisodes" in s["held"] for s in seen)  # what the executor holds was searched
    assert len(rows(tmp_path / "ray.csv")) == 2 * 2 * 4  # and the driver scored every episode

    fixed = tmp_path / "fixedk.jsonl"
    assert (
        main(
            [
                "fixedk",
                "--task",
                f"folder:{data}",
                *"--shots 1 --seeds 0-3 --image-size 32 --quiet --cache-dir".split(),
                str(tmp_path / "cache"),
                "--out",
                str(tmp_path / "fixedk.csv"),
                "--method",
                f"label-spy:report={fixed}",
                "--executor",
                "ray",
            ]
        )
        == 0
    )
    seen = spied(fixed)
    assert {s["stage"] for s in seen} == {"fit", "predict"} and all(s["pid"] != os.getpid() for s in seen)
    assert [s for s in seen if s["found"]] == []


def test_the_spy_does_find_labels_in_the_process_that_holds_them(data, tmp_path):
    """The search above can succeed: in the driver's own process (the local executor) it finds the episode
    set, which is why untrusted plugins belong on workers (docs/adding-a-method.md)."""
    report = tmp_path / "local.jsonl"
    assert run(data, tmp_path / "local.csv", tmp_path / "cache", f"label-spy:report={report}", episodes=2) == 0
    seen = spied(report)
    assert seen and all(s["pid"] == os.getpid() for s in seen)
    assert all(any("EpisodeSet" in f for f in s["found"]) for s in seen)


def test_the_executor_refuses_an_episode_set(local_ray, data, tmp_path):
    from benchmark.executors import RayExecutor
    from methods.registry import create_method
    from tasks.registry import load_task

    episodes = load_task(f"folder:{data}", tmp_path).episodes(3, 1, 2, 2, seed=0)
    executor = RayExecutor(None, log=lambda message: None)
    with pytest.raises(TypeError, match="BlindEpisodes"):
        next(executor.answers(create_method("protonet"), episodes, [0], 0, "protonet"))
