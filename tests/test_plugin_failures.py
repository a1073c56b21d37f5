"""A method's failure is the method's, never the run's: whatever a plugin raises (SystemExit and
KeyboardInterrupt included), returns (complex scores) or declares (a version that is no integer, a config()
that is not JSON) ends in one line naming it; rows finished before are kept, the other methods still run, and
the exit status says who was at fault (3: a method failed, 2: refused before any work). The user's own Ctrl-C
still interrupts the run (130)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from fakes_methods import instant_method
from fakes_reliability import make_folder_dataset, read_rows

from benchmark.cli import main
from benchmark.results import read_results
from methods.registry import register_method

EPISODES = 4
FAILS_AT = 2  # the failing methods answer episodes 0 and 1, then fail on episode 2


Ok = instant_method("pf-ok")


class FailsLater(Ok):
    """Fits FAILS_AT episodes, then raises `error()` in fit."""

    def __init__(self):
        self.fits = 0

    def fit(self, support_idx, support_y, n_way, rng):
        self.fits += 1
        if self.fits > FAILS_AT:
            raise self.error()
        super().fit(support_idx, support_y, n_way, rng)


@register_method("pf-exit")
class Exits(FailsLater):
    @staticmethod
    def error():
        return SystemExit(0)


@register_method("pf-ctrl-c")
class RaisesKeyboardInterrupt(FailsLater):
    @staticmethod
    def error():
        return KeyboardInterrupt()


@register_method("pf-sigint")
class UserPressesCtrlC(FailsLater):
    """The user's Ctrl-C arriving while the method fits: a real SIGINT to this process."""

    @staticmethod
    def error():
        os.kill(os.getpid(), signal.SIGINT)
        return RuntimeError("the SIGINT should have interrupted before this")


@register_method("pf-complex")
class ComplexScores(Ok):
    def predict(self, query_idx):
        return super().predict(query_idx) + 1j


@register_method("pf-exit-prepare")
class ExitsInPrepare(Ok):
    def prepare(self, ctx):
        raise SystemExit(1)


@register_method("pf-exit-init")
class ExitsWhenBuilt(Ok):
    def __init__(self):
        raise SystemExit(2)


@register_method("pf-version-text")
class TextVersion(Ok):
    version = "2"


@register_method("pf-version-float")
class FloatVersion(Ok):
    version = 1.5


@register_method("pf-config-set")
class SetConfig(Ok):
    def config(self):
        return {"classes": {1, 2}}


@register_method("pf-config-nan")
class NanConfig(Ok):
    def config(self):
        return {"alpha": float("nan")}


@register_method("pf-config-list")
class ListConfig(Ok):
    def config(self):
        return [1, 2]


@register_method("pf-config-raises")
class RaisingConfig(Ok):
    def config(self):
        raise SystemExit(0)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("plugin-failures") / "data", per_class=8, size=16)


def run(data: Path, out: Path, *methods: str, command: str = "run") -> int:
    argv = [
        command,
        *[a for m in methods for a in ("--method", m)],
        "--task",
        f"folder:{data}",
        *"--shots 1 --image-size 16 --quiet --cache-dir".split(),
        str(data.parent / "cache"),
        "--out",
        str(out),
    ]
    if command == "run":
        argv += [*"--ways 3 --queries 2 --episodes".split(), str(EPISODES)]
    else:
        argv += ["--seeds", "0-3"]
    return main(argv)


def error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith(("error:", "internal error:"))]


def episodes_of(out: Path, method: str) -> list[int]:
    return sorted(int(r["episode"]) for r in read_rows(out) if r["method"] == method)


@pytest.mark.parametrize(
    "method,detail",
    [
        ("pf-exit", "SystemExit: 0 (it tried to end the process; a method returns scores or raises)"),
        ("pf-ctrl-c", "KeyboardInterrupt"),
    ],
)
def test_exit_or_keyboard_interrupt_in_fit_fails_that_method_only(data, tmp_path, capsys, method, detail):
    out = tmp_path / "r.csv"
    assert run(data, out, method, "pf-ok") == 3
    assert error_lines(capsys) == [f"error: method {method} failed in fit on episode {FAILS_AT}: {detail}"]
    assert episodes_of(out, method) == list(range(FAILS_AT))  # the rows finished before the failure are kept
    assert episodes_of(out, "pf-ok") == list(range(EPISODES))  # and the next method ran


def test_the_users_ctrl_c_still_interrupts_the_run(data, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert run(data, out, "pf-sigint", "pf-ok") == 130
    err = capsys.readouterr().err
    assert "interrupted; finished episodes are saved" in err and "error:" not in err
    assert episodes_of(out, "pf-sigint") == list(range(FAILS_AT))
    assert episodes_of(out, "pf-ok") == []  # the run stopped: the next method did not start
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back


def test_a_keyboard_interrupt_in_fixed_k_is_the_methods_failure(tmp_path, capsys):
    data = make_folder_dataset(tmp_path / "data", per_class=16, size=16)  # 4+ test images a class
    out = tmp_path / "fk.csv"
    assert run(data, out, "pf-ctrl-c", "pf-ok", command="fixedk") == 3
    assert error_lines(capsys) == [
        "error: method pf-ctrl-c failed in the fixed-K protocol at 1 shots: KeyboardInterrupt"
    ]
    assert {r["method"] for r in read_rows(out)} == {"pf-ok"}


def test_complex_scores_are_refused(data, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert run(data, out, "pf-complex", "pf-ok") == 3
    assert error_lines(capsys) == [
        "error: method pf-complex failed in predict on episode 0: returned scores of "
        "type complex128; expected real numbers"
    ]
    assert episodes_of(out, "pf-complex") == [] and episodes_of(out, "pf-ok") == list(range(EPISODES))


def test_exit_in_prepare_fails_that_method_only(data, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert run(data, out, "pf-exit-prepare", "pf-ok") == 3
    assert error_lines(capsys) == [
        "error: method pf-exit-prepare failed in prepare: SystemExit: 1 (it tried to end "
        "the process; a method returns scores or raises)"
    ]
    assert episodes_of(out, "pf-ok") == list(range(EPISODES))


@pytest.mark.parametrize(
    "method,message",
    [
        ("pf-exit-init", "method pf-exit-init failed when built: SystemExit: 2; fix or uninstall that method"),
        (
            "pf-version-text",
            "method pf-version-text: its version is '2', not an integer from 0 to 2147483647; set the "
            "class attribute `version` to one (e.g. version = 2), or uninstall that method",
        ),
        ("pf-version-float", "method pf-version-float: its version is 1.5, not an integer"),
        (
            "pf-config-set",
            "method pf-config-set: config() returned {'classes': {1, 2}}, which is not JSON (Object of "
            "type set is not JSON serializable); its values must be numbers (finite), text, true/false, "
            "null, or lists and dicts of these",
        ),
        ("pf-config-nan", "method pf-config-nan: config() returned {'alpha': nan}, which is not JSON"),
        ("pf-config-list", "method pf-config-list: config() returned a list, not a dict of its options"),
        ("pf-config-raises", "method pf-config-raises: config() failed (SystemExit: 0); fix or uninstall that method"),
    ],
)
def test_a_bad_declaration_is_refused_before_any_work(data, tmp_path, capsys, method, message):
    out = tmp_path / "r.csv"
    assert run(data, out, "pf-ok", method) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines
    assert not out.exists()


def test_rows_of_a_failed_method_resume_after_the_fix(data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.csv"
    assert run(data, out, "pf-exit") == 3
    monkeypatch.setattr(FailsLater, "fit", Ok.fit)  # the plugin fixed
    capsys.readouterr()
    assert run(data, out, "pf-exit") == 0
    assert f"{FAILS_AT} episodes already in" in capsys.readouterr().err
    assert len(read_results(out)) == EPISODES


def test_a_method_failure_survives_pickling():
    """Ray sends a worker's MethodFailed to the driver pickled; it must arrive as itself, with its message."""
    import pickle

    from benchmark.scoring import MethodFailed

    failure = MethodFailed("knn:k=3", "fit", " on episode 7", ValueError("boom"))
    back = pickle.loads(pickle.dumps(failure))
    assert type(back) is MethodFailed and str(back) == "method knn:k=3 failed in fit on episode 7: ValueError: boom"
    assert back.label == "knn:k=3"


def test_a_method_failure_says_where_in_the_loop_it_happened():
    """A loop around the method (a crater run's draws) adds its place to where the method failed, before the
    reason; a failure rebuilt from its message (after Ray) adds it at the end."""
    import pickle

    from benchmark.scoring import MethodFailed

    failure = MethodFailed("knn:k=3", "fit", " in its sandbox", ValueError("boom"))
    placed = failure.at(" at K=5, draw seed 2")
    assert str(placed) == "method knn:k=3 failed in fit in its sandbox at K=5, draw seed 2: ValueError: boom"
    assert type(placed) is MethodFailed and placed.label == "knn:k=3"
    rebuilt = pickle.loads(pickle.dumps(failure)).at(" (draw seed 2)")
    assert str(rebuilt) == "method knn:k=3 failed in fit in its sandbox: ValueError: boom (draw seed 2)"
