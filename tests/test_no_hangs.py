"""Inputs that used to hang without a word end in one line, promptly: a results path that is a named pipe
(reading one waits for a writer), and a --ray-address where nothing listens (Ray retries it for minutes)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from fakes_reliability import bench, make_folder_dataset

from benchmark.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("hangs") / "data", per_class=8, size=16)


def run_argv(data: Path, out: Path, *extra) -> list[str]:
    return [
        *"run --method protonet --task".split(),
        f"folder:{data}",
        *"--shots 1 --ways 3 --queries 2 --episodes 2 --image-size 16 --quiet --cache-dir".split(),
        str(data.parent / "cache"),
        "--out",
        str(out),
        *map(str, extra),
    ]


def test_a_results_path_that_is_a_named_pipe_is_refused(data, tmp_path):
    fifo = tmp_path / "results.csv"
    os.mkfifo(fifo)
    # a subprocess with a deadline: the old code blocked in open() for ever, which must fail the test, not hang it
    done = bench(*run_argv(data, fifo), timeout=60, PYTHONPATH=str(ROOT))  # this checkout's code
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: results path {fifo} is a named pipe (FIFO), not a regular file; give a .csv file"
    ]
    assert not list(tmp_path.glob("results.csv.*"))  # no lock file or other debris


def unblock_after(fifo: Path, seconds: float):
    """If the code under test opens `fifo` for reading and waits, open and close its writing end after `seconds`,
    so the test fails instead of hanging."""
    import threading

    def writer():
        deadline = time.monotonic() + seconds + 30
        time.sleep(seconds)
        while time.monotonic() < deadline:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO while nobody reads it
                return
            except OSError:
                time.sleep(0.1)

    threading.Thread(target=writer, daemon=True).start()


@pytest.mark.parametrize("command", ["leaderboard", "migrate", "fixedk-leaderboard"])
def test_other_commands_refuse_a_named_pipe(tmp_path, capsys, command):
    fifo = tmp_path / "results.csv"
    os.mkfifo(fifo)
    unblock_after(fifo, 10)
    argv = {
        "leaderboard": ["leaderboard", str(fifo)],
        "migrate": ["migrate", str(fifo)],
        "fixedk-leaderboard": ["leaderboard", "--fixedk", str(fifo)],
    }[command]
    started = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{fifo} is a named pipe (FIFO), not a regular file" in err[0], err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_ray_address_is_a_prompt_one_line_error(data, tmp_path, capsys):
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()  # else start_ray would use that instance and never connect
    port, out = free_port(), tmp_path / "r.csv"
    started = time.monotonic()
    code = main(run_argv(data, out, "--executor", "ray", "--ray-address", f"127.0.0.1:{port}", "--ray-timeout", "1.5"))
    took = time.monotonic() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert (
        err[0].startswith(
            f"error: --ray-address 127.0.0.1:{port}: nothing answers at 127.0.0.1:{port} within "
            "1.5 s (Connection refused)"
        )
        and "--ray-timeout SECONDS" in err[0]
    )
    assert 1.0 < took < 15 and not ray.is_initialized() and not out.exists()


def test_the_address_check_returns_at_once_where_something_listens():
    from benchmark.executors import bootstrap_endpoint, wait_for_address

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        started = time.monotonic()
        wait_for_address(f"127.0.0.1:{port}", 5)
        wait_for_address(f"ray://127.0.0.1:{port}", 5)
        assert time.monotonic() - started < 2
    assert bootstrap_endpoint("[::1]:6379") == ("::1", 6379)
    assert bootstrap_endpoint("local") is None and bootstrap_endpoint("not an address") is None


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--ray-timeout", "0"], "--ray-timeout must be a positive number, got '0'"),
        (["--ray-timeout", "5"], "--ray-timeout goes with --ray-address"),
    ],
)
def test_ray_timeout_option_is_checked(data, tmp_path, capsys, argv, message):
    assert main(run_argv(data, tmp_path / "r.csv", "--executor", "ray", *argv)) == 2
    assert message in capsys.readouterr().err
