"""Interrupted, resumed and concurrent runs, and cache integrity.

- a real `bench run` killed with SIGKILL mid-run and run again ends with the rows of an uninterrupted run;
- Ctrl-C saves the finished episodes; a partial last line (a write cut short) is ignored and cut off;
- two `bench run` processes appending to one CSV at once leave every row whole, once;
- a truncated or altered cache file is reported in one line and recomputed.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes_reliability import bench, bench_popen, line_count, make_folder_dataset, read_rows, run_args, stable

from benchmark.cli import main
from benchmark.results import COLUMNS, KEY, SCHEMA_VERSION, append_rows, matching, read_results
from methods.cache import Cache


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("reliability") / "data")


def assert_whole(path: Path, n_rows: int) -> list[dict]:
    """Every line of the CSV is a complete row, the header appears once, no key twice."""
    text = path.read_text()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines[0] == ",".join(COLUMNS) and lines.count(lines[0]) == 1
    rows = read_rows(path)
    assert len(rows) == n_rows
    for row in rows:
        assert None not in row and all(row[c] is not None for c in COLUMNS), row  # no short or long row
        assert row["schema"] == str(SCHEMA_VERSION) and 0 <= float(row["accuracy"]) <= 1
    keys = [tuple(r[c] for c in KEY) for r in rows]
    assert len(set(keys)) == len(keys), "duplicated (method, task, shots, episode) rows"
    return rows


# -- interrupted runs -----------------------------------------------------------------------------------------


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(data, tmp_path):
    episodes = 60  # linear-probe: ~0.1 s an episode, rows flushed every 20 episodes or 2 s
    out, cache = tmp_path / "killed.csv", tmp_path / "cache"
    argv = run_args(data, out, cache, episodes=episodes)
    proc = bench_popen(*argv, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while line_count(out) < 2:  # header + at least one batch of rows
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no rows appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = assert_whole(out, line_count(out) - 1)
    assert 0 < len(partial) < episodes, "the run was not killed mid-way"

    resumed = bench(*argv, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(partial)} episodes already in" in resumed.stderr
    rows = assert_whole(out, episodes)
    assert {int(r["episode"]) for r in rows} == set(range(episodes))
    # the rows written before the kill are kept as they were
    assert stable(rows[: len(partial)]) == stable(partial)

    reference_out = tmp_path / "uninterrupted.csv"
    reference = bench(*run_args(data, reference_out, tmp_path / "cache2", episodes=episodes), cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert stable(rows) == stable(assert_whole(reference_out, episodes))

    # and the table printed at the end is the same, but for its last column (wall seconds)
    def table(text):
        return [line.rsplit("│", 2)[0] for line in text.splitlines() if "linear-probe" in line]

    assert table(resumed.stdout) == table(reference.stdout) and table(reference.stdout)


def quick_argv(data, out, cache, episodes=30):
    return [str(a) for a in run_args(data, out, cache, method="protonet", episodes=episodes)]


def test_ctrl_c_keeps_finished_episodes_and_resume_completes(data, tmp_path, monkeypatch, capsys):
    from methods.linear_probe import LinearProbe  # a method answered episode by episode

    def quick_argv(data, out, cache):
        return [str(a) for a in run_args(data, out, cache, method="linear-probe", episodes=30)]

    out, cache = tmp_path / "out.csv", tmp_path / "cache"
    assert main(quick_argv(data, tmp_path / "ref.csv", cache)) == 0
    original, calls = LinearProbe.fit_features, []

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 27:  # after one flush of 20 rows, 6 more finished episodes
            os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C (a KeyboardInterrupt raised here is the method's)
        return original(self, *args)

    monkeypatch.setattr(LinearProbe, "fit_features", interrupted)
    capsys.readouterr()
    assert main(quick_argv(data, out, cache)) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert len(assert_whole(out, 26)) == 26  # every finished episode was saved
    monkeypatch.setattr(LinearProbe, "fit_features", original)
    assert main(quick_argv(data, out, cache)) == 0
    assert stable(assert_whole(out, 30)) == stable(read_rows(tmp_path / "ref.csv"))


def done_episodes(path, key: dict) -> set[int]:
    """Episode numbers recorded in `path` for the rows matching `key`."""
    frame = read_results(path)
    return set(frame.loc[matching(frame, key), "episode"].astype(int))


def test_a_partial_last_line_is_ignored_then_cut_off(data, tmp_path, capsys):
    out, cache = tmp_path / "out.csv", tmp_path / "cache"
    assert main(quick_argv(data, out, cache, episodes=8)) == 0
    first = read_rows(out)
    reference = stable(first)
    lines = out.read_bytes().splitlines(keepends=True)
    # a crash in the middle of writing the last row (a full disk, power loss): half of it is on disk
    out.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    assert len(read_results(out)) == 7  # the torn row is not a result...
    assert done_episodes(out, {"task": first[0]["task"], "method": "protonet"}) == set(range(7))
    capsys.readouterr()
    assert main(quick_argv(data, out, cache, episodes=8)) == 0  # ...so it is redone, on a line of its own
    err = capsys.readouterr().err
    assert "ended in a partial row" in err and "removed it" in err
    assert stable(assert_whole(out, 8)) == reference


def test_a_damaged_results_file_is_one_line_error(data, tmp_path, capsys):
    out = tmp_path / "out.csv"
    out.write_text(",".join(COLUMNS) + "\n" + "1,a,b\n" + '"unterminated,' * 3 + "\n")
    code = main(quick_argv(data, out, tmp_path / "cache", episodes=2))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"results file {out} is damaged" in err


# -- concurrent writers ----------------------------------------------------------------------------------------


def fake_row(writer: int, i: int) -> dict:
    row = {c: "" for c in COLUMNS}
    row.update(
        schema=SCHEMA_VERSION,
        task="t",
        method=f"m{writer}",
        config='{"a": 1, "b": "x,y"}',
        shots=1,
        ways=5,
        queries=15,
        seed=0,
        manifest="abc",
        episode=i,
        accuracy=0.5,
        macro_f1=0.25,
        class_accuracy="|".join(["0.5"] * 400),
        classes="a|b",
        n_query=75,
        seconds=0.1,
    )  # ~2 KB a row
    return row


def writer_process(path: str, writer: int, n: int, batch: int, duplicate_of: int | None) -> None:
    for start in range(0, n, batch):
        rows = [fake_row(writer if duplicate_of is None else duplicate_of, i) for i in range(start, start + batch)]
        append_rows(Path(path), rows)


def test_concurrent_appends_leave_every_row_whole_and_once(tmp_path):
    path = tmp_path / "shared.csv"
    ctx = multiprocessing.get_context("fork")
    # writers 0-2 write their own rows; writers 3-5 write writer 0's keys again (identical runs at once)
    procs = [
        ctx.Process(target=writer_process, args=(str(path), w, 120, 1 + w % 3, 0 if w >= 3 else None)) for w in range(6)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = assert_whole(path, 3 * 120)
    for w in range(3):
        assert sorted(int(r["episode"]) for r in rows if r["method"] == f"m{w}") == list(range(120))
    assert all(r["config"] == '{"a": 1, "b": "x,y"}' and len(r["class_accuracy"]) == 1599 for r in rows)


def test_two_bench_runs_append_to_one_csv_at_once(data, tmp_path):
    out, cache = tmp_path / "both.csv", tmp_path / "cache"
    assert bench(*run_args(data, tmp_path / "warm.csv", cache, method="protonet", episodes=1)).returncode == 0
    first = bench_popen(*run_args(data, out, cache, episodes=40), cwd=tmp_path)
    # the second runs linear-probe too: the same episodes, written by whichever process gets there first
    second = bench_popen(*run_args(data, out, cache, "--method", "protonet", episodes=40), cwd=tmp_path)
    for proc in (first, second):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    rows = assert_whole(out, 80)
    for method in ("linear-probe", "protonet"):
        assert sorted(int(r["episode"]) for r in rows if r["method"] == method) == list(range(40))
    assert len(read_results(out)) == 80


# -- caches ----------------------------------------------------------------------------------------------------


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "altered":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif how == "sidecar missing":
        path.with_name(path.name + ".sha256").unlink()
    elif how == "sidecar altered":
        path.with_name(path.name + ".sha256").write_text("0" * 64)


@pytest.mark.parametrize("how", ["truncated", "altered", "sidecar missing", "sidecar altered"])
def test_a_damaged_array_is_reported_in_one_line_and_recomputed(tmp_path, capsys, how):
    cache, calls = Cache(tmp_path), []
    value = np.random.default_rng(0).standard_normal((50, 7)).astype(np.float32)

    def compute():
        calls.append(1)
        return value

    assert np.array_equal(cache.array("features", "k", compute), value)
    path = cache.path("features", "k", "npy")
    assert path.with_name("k.npy.sha256").read_text() == hashlib.sha256(path.read_bytes()).hexdigest()
    assert np.array_equal(cache.array("features", "k", compute), value) and len(calls) == 1  # a hit
    damage(path, how)
    capsys.readouterr()
    again = cache.array("features", "k", compute)
    err = capsys.readouterr().err
    assert np.array_equal(again, value) and len(calls) == 2
    assert err.count("\n") == 1 and err.startswith(f"warning: cache file {path} is corrupt") and "recomputing" in err
    assert np.array_equal(cache.array("features", "k", compute), value) and len(calls) == 2  # repaired
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("how", ["truncated", "altered"])
def test_a_damaged_checkpoint_is_reported_and_recomputed(tmp_path, capsys, how):
    cache, calls = Cache(tmp_path), []
    state = torch.nn.Linear(6, 3).state_dict()

    def compute():
        calls.append(1)
        return state

    cache.state_dict("ckpt", "k", compute)
    loaded, cached = cache.state_dict("ckpt", "k", compute)
    assert cached and all(torch.equal(loaded[n], state[n]) for n in state)
    damage(cache.path("ckpt", "k", "pt"), how)
    capsys.readouterr()
    loaded, cached = cache.state_dict("ckpt", "k", compute)
    assert not cached and len(calls) == 2 and all(torch.equal(loaded[n], state[n]) for n in state)
    assert capsys.readouterr().err.count("corrupt") == 1


def test_a_failed_write_leaves_no_cache_file(tmp_path, monkeypatch, capsys):
    """A full (or read-only) cache folder: one line naming it, the value is still computed, nothing is left."""
    cache = Cache(tmp_path)

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    assert np.array_equal(cache.array("features", "k", lambda: np.ones(3)), np.ones(3))
    assert np.array_equal(cache.array("features", "k2", lambda: np.zeros(3)), np.zeros(3))
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"warning: cannot write to cache folder {tmp_path} (No space left on device); computing without caching"
    )
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # neither the file nor a temporary
    cache = Cache(tmp_path)  # the next run caches again
    assert np.array_equal(cache.array("features", "k", lambda: np.ones(3)), np.ones(3))
    assert cache.path("features", "k", "npy").is_file()


def test_a_corrupt_feature_cache_is_recomputed_by_bench_run(data, tmp_path):
    out, cache = tmp_path / "out.csv", tmp_path / "cache"
    argv = run_args(data, out, cache, method="protonet", episodes=5)
    assert bench(*argv).returncode == 0
    reference = stable(read_rows(out))
    features = list((cache / "features").glob("*.npy"))
    assert len(features) == 1
    damage(features[0], "truncated")
    out.unlink()
    again = bench(*argv)
    assert again.returncode == 0, again.stderr
    warnings = [line for line in again.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: cache file {features[0]} is corrupt (checksum mismatch); recomputing it"]
    assert stable(read_rows(out)) == reference
    assert "warning:" not in bench(*argv).stderr  # the rewritten file verifies
