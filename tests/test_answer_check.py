"""Every built-in method's answers depend on its episode and prepared state alone: a fresh process that answers
a few of its episodes again gets the same scores, so the harness keeps its rows (benchmark/runner.py,
check_answers_again). Cheating plugins that remember are refused in tests/test_cheating_plugins.py."""

from __future__ import annotations

import numpy as np
import pytest
from test_isolate import data  # noqa: F401  (the class-by-class folder data set)
from test_methods import FAST_OPTIONS

from benchmark.protocols.episodes import run_benchmark
from benchmark.runner import CHECKED_EPISODES, MethodSpec, RunConfig, episodes_to_check
from methods.progress import Progress
from methods.registry import METHODS, builtin_method_names

pytestmark = pytest.mark.answer_check


class Logged(Progress):
    def __init__(self):
        self.lines = []

    def log(self, message):
        self.lines.append(message)


def spec(name: str) -> str:
    options = {
        **FAST_OPTIONS.get(name, {}),
        **({"val_folds": 2} if name.startswith("sdft") or name == "base-classifier" else {}),
    }
    return name + (":" + ",".join(f"{k}={v}" for k, v in options.items()) if options else "")


def test_the_checked_episodes_are_the_last_and_some_drawn_from_the_seed():
    chosen = episodes_to_check(list(range(600)), seed=0, k=5)
    assert 599 in chosen and len(chosen) == CHECKED_EPISODES
    assert chosen == episodes_to_check(list(range(600)), seed=0, k=5) != episodes_to_check(list(range(600)), 1, 5)
    assert episodes_to_check([4], 0, 1) == [4] and episodes_to_check([], 0, 1) == []


@pytest.mark.parametrize("name", builtin_method_names())
def test_every_builtin_passes_the_check(name, data, tmp_path, capsys):  # noqa: F811
    failures = []
    config = RunConfig(
        methods=[MethodSpec.parse(spec(name))],
        task=f"folder:{data}",
        shots=[2],
        n_way=3,
        n_query=3,
        episodes=4,
        image_size=32,
        data_dir=data,
        cache_dir=tmp_path / "cache",
        out=tmp_path / "rows.csv",
    )
    logged = Logged()
    rows = run_benchmark(config, logged, failures=failures)
    assert not failures, failures
    assert len(rows) == 4
    # the check ran: each query on its own too, unless the method says it reads its query set
    alone = "each query also on its own" if not METHODS.lookup(name).transductive else "by a fresh process: the"
    assert any("answered again by a fresh process" in line and alone in line for line in logged.lines), logged.lines


@pytest.mark.parametrize("name", [n for n in builtin_method_names() if not METHODS.lookup(n).takes_classes])
def test_every_builtin_passes_the_fixed_k_check(name, data, tmp_path):  # noqa: F811
    """Every inductive built-in that fixed-K runs (it gives no class ids) answers a test image alone as it does
    in its pool (benchmark/fixedk.py)."""
    from benchmark.fixedk import FixedKConfig
    from benchmark.protocols.fixedk import run_fixedk_benchmark

    failures, logged = [], Logged()
    config = FixedKConfig(
        methods=[MethodSpec.parse(spec(name))],
        task=f"folder:{data}",
        shots=[2],
        seeds=[0, 1],
        image_size=32,
        data_dir=data,
        cache_dir=tmp_path / "cache",
        out=tmp_path / "fixedk.csv",
    )
    rows = run_fixedk_benchmark(config, logged, failures=failures)
    assert not failures, failures
    assert len(rows) == 2
    if not METHODS.lookup(name).transductive:
        assert any("answered again, each on its own: the same answers" in line for line in logged.lines), logged.lines


def test_scores_asked_alone_may_differ_by_float_noise_only():
    """A batch of another size rounds otherwise: 1e-4 of the scores' scale on a CPU, 1e-2 on a GPU (TF32
    convolutions); more than that, or another shape, is another answer."""
    from benchmark.answer_checks import alone_tolerance, same_alone

    together = np.array([[12.0, -3.0, 0.5], [1.0, 2.0, 3.0]])
    assert alone_tolerance("cpu") == 1e-4 and alone_tolerance("cuda") == 1e-2
    assert same_alone(together, together * (1 + 5e-5), "cpu")
    assert not same_alone(together, together * (1 + 1e-3), "cpu") and same_alone(together, together * 1.001, "cuda")
    assert not same_alone(together, together[:, :2], "cpu")
    shifted = together.copy()
    shifted[1] = [2.0, 1.0, 3.0]  # a transductive method's second query
    assert not same_alone(together, shifted, "cuda")
