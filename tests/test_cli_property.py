"""Property: whatever arguments `bench run` is given, it either succeeds (exit 0, whole result rows) or prints
exactly one line `error: ...` with exit code 2, no traceback, and writes no result row."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from fakes_reliability import make_folder_dataset, read_rows
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from benchmark.cli import main
from benchmark.results import COLUMNS


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny folder dataset (3 classes x 10 images), a feature cache already warm at 32 px, and a results path."""
    root = tmp_path_factory.mktemp("property")
    data = make_folder_dataset(root / "data")
    cache = root / "cache"
    warm = [
        *"run --method protonet --task".split(),
        f"folder:{data}",
        *"--shots 1 --ways 3 --queries 1 --episodes 1 --image-size 32 --quiet --cache-dir".split(),
        str(cache),
        "--out",
        str(root / "warm.csv"),
    ]
    assert main(warm) == 0
    return {"root": root, "data": data, "cache": cache, "out": root / "out.csv", "missing": root / "no-such-dir"}


junk = st.text(max_size=12)
small = st.integers(-3, 6).map(str)
numberish = st.one_of(
    small,
    junk,
    st.sampled_from(["", "1.5", "1e3", "0x10", " 2", "2 ", *"+2 -0 ٣ 1,2 10**9 99999999999999999999 nan".split()]),
)

# (flag, values): values are strategies of strings; some placeholders are filled in from the fixture
OPTIONS = {
    "--method": st.one_of(
        st.sampled_from(
            [
                "protonet",
                "linear-probe",
                "protonett",
                "",
                *": protonet: protonet:steps protonet:steps=x protonet:=3 linear-probe:C=abc linear-probe:bogus=1 nope:a=1".split(),
            ]
        ),
        junk,
    ),
    "--task": st.one_of(
        st.sampled_from(
            [
                *"folder:DATA DATA hirise-regions hirise-region aid-classes domars16k folder:MISSING csv:MISSING folder: csv: folder:DATA/class0 csv:DATA/class0/0.png".split(),
                "folder:\x00",
            ]
        ),
        junk,
    ),
    "--shots": st.one_of(st.sampled_from([*"1 2 1,2 3 1,1 ,1 2, 0 -1 1,-1 x".split()]), numberish),
    "--ways": st.one_of(st.sampled_from(["2", "3", "4", "1"]), numberish),
    "--queries": st.one_of(st.sampled_from(["1", "2", "3"]), numberish),
    "--episodes": st.one_of(st.sampled_from(["1", "2", "3", "100001", "100000000000"]), numberish),
    "--seed": st.one_of(st.sampled_from(["0", "1", "-1", "2**70"]), numberish),
    "--image-size": st.one_of(st.just("32"), st.sampled_from(["0", "15", "1025", "100000", "thirty"]), numberish),
    "--threads": st.one_of(st.sampled_from(["1", "2"]), numberish),
    "--backbone": st.one_of(st.just("efficientnet_lite0"), st.sampled_from(["efficientnet_lite9", ""]), junk),
    "--data-dir": st.sampled_from(["MISSING", "DATA"]),
    "--bogus": st.just("1"),
}


VALID = {
    "--method": "protonet",
    "--task": "folder:DATA",
    "--shots": "1",
    "--ways": "3",
    "--queries": "2",
    "--episodes": "2",
}


@st.composite
def argvs(draw):
    """Mostly a valid run with a few arguments changed, dropped, repeated or added; now and then anything."""
    argv = [draw(st.sampled_from(["run"] * 12 + ["runn", "", "list"]))]
    for flag, value in VALID.items():
        action = draw(st.sampled_from(["keep"] * 16 + ["change", "change", "drop", "repeat"]))
        if action == "drop":
            continue
        argv += [flag, value if action == "keep" else draw(OPTIONS[flag])]
        if action == "repeat":
            argv += [flag, draw(OPTIONS[flag])]
    extra = draw(st.lists(st.sampled_from(sorted(OPTIONS)), max_size=3)) if draw(st.integers(0, 2)) == 0 else []
    for flag in extra:
        argv.append(flag)
        if draw(st.integers(0, 20)) > 0:  # now and then a flag without its value
            argv.append(draw(OPTIONS[flag]))
    if draw(st.integers(0, 9)) == 0:
        argv.append(draw(junk))  # a stray positional argument
    return argv


def fill(argv: list[str], world) -> list[str]:
    data, missing = str(world["data"]), str(world["missing"])
    filled = [a.replace("DATA", data).replace("MISSING", missing) for a in argv]
    if filled and filled[0] == "run":  # keep every run small and its output in the test's folder
        filled += ["--quiet", "--cache-dir", str(world["cache"]), "--out", str(world["out"])]
        if "--image-size" not in filled:
            filled += ["--image-size", "32"]
        if "--episodes" not in filled:
            filled += ["--episodes", "2"]
        if "--data-dir" not in filled:
            filled += ["--data-dir", missing]
    return filled


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example([*"run --method protonet --task folder:DATA --shots 1 --ways 3 --queries 2".split()])
@example([*"run --method linear-probe --task folder:DATA --shots 1,2 --ways 2 --seed 3".split()])
@example([*"run --method protonet --task folder:DATA --seed -1".split()])
@example([*"run --method protonet --task folder:DATA --shots 99999999999999999999".split()])
@example(["run", "--method", "protonet", "--task", "folder:\x00"])
@example([*"run --method protonet --task folder:DATA --image-size 100000".split()])
@given(argv=argvs())
def test_run_either_succeeds_or_fails_in_one_line(world, argv):
    argv = fill(argv, world)
    out: Path = world["out"]
    out.unlink(missing_ok=True)
    stdout, stderr = io.StringIO(), io.StringIO()
    # in the fixture's folder: `folder:` alone would otherwise scan the repository
    with contextlib.chdir(world["root"]), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(argv)
        except SystemExit as exc:  # only --help, which hypothesis does not generate
            raise AssertionError(f"SystemExit({exc.code}) for {argv}") from exc
    err, text = stderr.getvalue(), stdout.getvalue() + stderr.getvalue()
    event(f"exit {code}")
    assert "Traceback" not in text, (argv, text)
    assert "internal error" not in err, (argv, err)
    if code == 0:
        assert argv[0] in ("run", "list"), argv
        assert not [line for line in err.splitlines() if line.startswith("error")], (argv, err)
        if argv[0] == "run":
            rows = read_rows(out)
            assert rows and all(None not in r and r["schema"] for r in rows)
            assert list(rows[0]) == COLUMNS
    else:
        assert code == 2, (argv, code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
        assert not out.exists(), "an error wrote result rows"
