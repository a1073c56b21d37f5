"""Plugins that try to score without learning (tests/cheating_plugins.py) score chance or are refused.

On 3-way pure noise, where no method can beat chance by learning, and on a class-sorted set of images that a
real method separates: in-process, the plugins that use row numbers, paths, memory across episodes and the
manifests beside the results; under --isolate all of them, also re-reading the data set from disk and searching
the interpreter's objects. Each probe is shown to win where the harness numbers rows by table order, which it
did before handles.
"""

from __future__ import annotations

import shutil

import cheating_plugins  # noqa: F401  (registers the cheating plugins)
import numpy as np
import pytest
from fakes_methods import class_image
from PIL import Image

from benchmark.protocols.episodes import run_benchmark
from benchmark.results import read_results
from benchmark.runner import MethodSpec, RunConfig
from tasks.handles import RowHandles

pytestmark = pytest.mark.answer_check

WAYS, QUERIES, EPISODES = 3, 5, 24
CHANCE = 1 / WAYS
BAND = CHANCE + 2.5 * np.sqrt(CHANCE * (1 - CHANCE) / (WAYS * QUERIES * EPISODES))  # a generous upper band
IN_PROCESS = ["cheat-rows", "cheat-paths", "cheat-memory-features", "cheat-memory-rows", "cheat-manifests"]
OUT_OF_PROCESS = ["cheat-disk", "cheat-gc"]  # they leave what they are handed: only --isolate stops them
SANDBOX_ONLY = ["cheat-memory-shm"]  # memory kept in the kernel's shared memory: the sandbox sweeps it


def dataset(root, kind: str):
    """Class-by-class folders of 3 classes x 24 images: pure noise, or class colours and stripes."""
    rng = np.random.default_rng(7)
    for c, name in enumerate("abc"):
        (root / name).mkdir(parents=True)
        for i in range(24):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) if kind == "noise" else class_image(c, i, i, 32)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def noise(tmp_path_factory):
    return dataset(tmp_path_factory.mktemp("noise") / "data", "noise")


@pytest.fixture(scope="module")
def stripes(tmp_path_factory):
    return dataset(tmp_path_factory.mktemp("stripes") / "data", "stripes")


def probe_spec(name: str, data, out) -> str:
    return {"cheat-manifests": f"cheat-manifests:out={out}", "cheat-disk": f"cheat-disk:data={data}"}.get(name, name)


def one_shot_config(methods, data, cache, out, ways=WAYS, episodes=EPISODES, isolate=False) -> RunConfig:
    """The probes' runs: 1-shot episodes of 32-px images of the generated folder task `data`."""
    return RunConfig(
        methods=[MethodSpec.parse(m) for m in methods],
        task=f"folder:{data}",
        shots=[1],
        n_way=ways,
        n_query=QUERIES,
        episodes=episodes,
        image_size=32,
        data_dir=data,
        cache_dir=cache,
        out=out,
        isolate=isolate,
    )


def run_probes(names, data, tmp_path, isolate=False, cache=None):
    """{probe: mean accuracy, or the failure's message}; rows of a refused probe must not be in the file."""
    out = tmp_path / "runs" / "probes.csv"
    cache = cache or tmp_path / "cache"
    cheating_plugins.MEMORY.clear()
    honest = run_benchmark(one_shot_config(["protonet"], data, cache, out))
    assert len(honest) == EPISODES  # the manifests beside the results are there for the probes to read
    failures = []
    config = one_shot_config([probe_spec(n, data, out) for n in names], data, cache, out, isolate=isolate)
    frame = run_benchmark(config, failures=failures)
    outcome = {f.label.split(":")[0]: str(f) for f in failures}
    for method, rows in frame.groupby("method"):
        outcome.setdefault(method.split(":")[0], float(rows["accuracy"].mean()))
    kept = read_results(out)
    for name, result in outcome.items():
        if isinstance(result, str):
            assert not kept["method"].str.startswith(name).any(), f"{name}'s rows stayed in the file"
    return outcome


def assert_chance_or_refused(outcome: dict, names):
    for name in names:
        result = outcome[name]
        if isinstance(result, str):
            assert "answers depend on earlier episodes" in result or "failed" in result, result
        else:
            assert result <= BAND, f"{name} scored {result:.3f} (chance {CHANCE:.3f}, band {BAND:.3f})"


@pytest.mark.parametrize("kind", ["noise", "stripes"])
def test_in_process_probes_score_chance_or_are_refused(kind, noise, stripes, tmp_path):
    data = noise if kind == "noise" else stripes
    outcome = run_probes(IN_PROCESS, data, tmp_path)
    assert_chance_or_refused(outcome, IN_PROCESS)
    for name in ("cheat-memory-features", "cheat-memory-rows"):  # memory wins where it is not checked
        assert "answers depend on earlier episodes" in str(outcome[name]), outcome[name]


def test_the_probes_win_where_rows_are_numbered_in_table_order(noise, tmp_path, monkeypatch):
    """The probes are real: with handles equal to row numbers (the numbering before handles), rows and
    manifests give the classes away on pure noise."""
    monkeypatch.setattr(
        RowHandles, "of_table", classmethod(lambda cls, table, cache_dir=None: cls.identity(len(table)))
    )
    outcome = run_probes(["cheat-rows", "cheat-manifests"], noise, tmp_path)
    assert outcome["cheat-rows"] > 0.8 and outcome["cheat-manifests"] > 0.9, outcome


def test_shared_memory_outlives_a_process_but_not_a_sandboxed_episode(noise, tmp_path):
    """In-process, memory kept in System V shared memory is there for the fresh process that answers again too,
    but that process remembers every episode where the run remembered only the earlier ones, so they answer
    differently and the method is refused; under --isolate every episode's fork leaves nothing behind (above)."""
    try:
        outcome = run_probes(SANDBOX_ONLY, noise, tmp_path)
    finally:
        cheating_plugins.SharedMemory.remove()
    assert "answers depend on earlier episodes" in str(outcome["cheat-memory-shm"]), outcome


def test_leaving_what_it_is_handed_in_process(noise, tmp_path):
    """What a plugin reaches by leaving what it is handed (docs/adding-a-method.md). In-process, re-reading the
    data set from disk wins (--isolate is the answer); searching the interpreter's objects finds the episodes,
    but the fresh process that answers episodes again holds none, so the method is refused."""
    outcome = run_probes(OUT_OF_PROCESS, noise, tmp_path)
    assert outcome["cheat-disk"] > 0.9, outcome
    assert "answers depend on earlier episodes" in str(outcome["cheat-gc"]), outcome


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_isolated_probes_score_chance_or_are_refused(noise, tmp_path):
    outcome = run_probes(IN_PROCESS + OUT_OF_PROCESS + SANDBOX_ONLY, noise, tmp_path, isolate=True)
    assert_chance_or_refused(outcome, IN_PROCESS + OUT_OF_PROCESS + SANDBOX_ONLY)
    for name in ("cheat-memory-features", "cheat-memory-rows", "cheat-memory-shm"):  # nothing to remember
        assert not isinstance(outcome[name], str), outcome[name]


def test_a_refused_method_keeps_its_rows_of_other_measurements(stripes, tmp_path):
    """The check that refuses a method sets aside the rows of this run's measurements only: the method's rows of
    another episode shape in the same file stay."""
    out = tmp_path / "probes.csv"
    cheating_plugins.MEMORY.clear()

    def config(ways, episodes):
        return one_shot_config(["cheat-memory-features"], stripes, tmp_path / "cache", out, ways, episodes)

    assert len(run_benchmark(config(2, 1))) == 1  # one episode: nothing remembered yet, the check passes
    failures = []
    run_benchmark(config(WAYS, EPISODES), failures=failures)
    assert failures and "answers depend on earlier episodes" in str(failures[0]), failures
    kept = read_results(out)
    assert kept["ways"].astype(int).tolist() == [2]


@pytest.mark.parametrize("isolate", [False, True])
def test_a_method_that_reads_its_query_set_must_say_so(stripes, tmp_path, isolate):
    """A method that says it is inductive but whose scores for a query change with the other queries it is asked
    (cheat-query-stats) is refused, its rows set aside: each checked episode's queries are answered again one
    at a time, in a fresh process or, isolated, fresh forks of its sandbox. The fresh process is asked them
    before any episode's whole query, so replaying the scores given together (replay=True) does not pass it.
    Honest inductive probes pass it."""
    if isolate and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    out, failures = tmp_path / "probes.csv", []
    cheating_plugins.REPLAYED.clear()
    methods = ["cheat-query-stats", "cheat-query-stats:replay=True", "cheat-rows"]
    rows = run_benchmark(one_shot_config(methods, stripes, tmp_path / "cache", out, isolate=isolate), failures=failures)
    assert [f.label for f in failures] == methods[:2], failures
    for failure in failures:
        assert "answers depend on the other queries it is asked with, yet it says it is inductive" in str(failure)
    assert set(rows["method"]) == {"cheat-rows"} and set(read_results(out)["method"]) == {"cheat-rows"}


@pytest.mark.parametrize("isolate", [False, True])
def test_fixed_k_refuses_a_method_that_reads_its_test_pool_unannounced(stripes, tmp_path, isolate):
    """The fixed-K protocol asks test images of its first and last seed again, each on its own: a method that
    reads its test pool without saying it is transductive fails before any row of it is written; an honest
    one writes its rows."""
    from benchmark.fixedk import FixedKConfig
    from benchmark.protocols.fixedk import run_fixedk_benchmark

    if isolate and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    failures = []
    rows = run_fixedk_benchmark(
        FixedKConfig(
            methods=[MethodSpec.parse(m) for m in ("cheat-query-stats", "protonet")],
            task=f"folder:{stripes}",
            shots=[2],
            data_dir=stripes,
            cache_dir=tmp_path / "cache",
            out=tmp_path / "fixedk.csv",
            image_size=32,
            seeds=[0, 1, 2],
            isolate=isolate,
        ),
        failures=failures,
    )
    assert [f.label for f in failures] == ["cheat-query-stats"], failures
    assert "answers depend on the other queries it is asked with" in str(failures[0]), failures
    assert set(rows["method"]) == {"protonet"} and len(rows) == 3
