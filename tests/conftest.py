import os
import signal
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # tests run beside each other on small machines

REAL_DATA = Path(os.environ.get("BENCH_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def answers_checked_where_tested(request, monkeypatch):
    """A fresh process answering a few episodes again costs a process start per method and run; the tests of
    that check (marked `answer_check`) keep it, the others, which test other things, skip it."""
    if request.node.get_closest_marker("answer_check") is None:
        import benchmark.runner

        monkeypatch.setattr(benchmark.runner, "CHECKED_EPISODES", 0)


@pytest.fixture(autouse=True, scope="session")
def digests_in_a_temporary_folder(tmp_path_factory):
    """Dataset-file digests of tests that load tasks outside a run's session go to a folder of the test
    session, not the user's cache (a `bench` command keeps them in its own --cache-dir)."""
    from benchmark.session import digests_in

    with digests_in(tmp_path_factory.mktemp("digests")):
        yield


@pytest.fixture(autouse=True, scope="session")
def sigint_as_from_a_terminal():
    """A suite started in the background by a non-interactive shell (`cmd &`) inherits SIGINT ignored, and then
    the tests of the user's Ctrl-C could not send one: they run under Python's own handler, as from a terminal."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the test, whatever the test before it set."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def real_data_dir() -> Path:
    if not (REAL_DATA / "hirise-v1").is_dir():
        pytest.skip(f"real data not found in {REAL_DATA}")
    return REAL_DATA
