"""The rows of `bench craters run` key on everything that determines them (benchmark/mapping/craters.CRATERS):
a rerun reuses a row only when task, source, backbone, method (label, version, config), data and
scene identity, preprocessing, grid, device and code all match; otherwise it computes anew (another task or
method label) or refuses in one line as `bench run` does (--fresh recomputes, --reuse-stale keeps rows of
other code). `bench migrate` brings files of schema 1-3 forward only with the facts their rows cannot tell."""

import csv
import io
import re
import shutil
from pathlib import Path

import crashing_plugins  # noqa: F401  (registers the crashing plugins)
import pytest
from crashing_plugins import CRASHES
from fakes import folder_like
from test_ctx_craters_task import ctx_scene_like

import benchmark.provenance
import benchmark.runner
import methods.simpleshot
from benchmark.cli import main
from benchmark.commands.migrate import CraterFacts, migrate_file
from benchmark.mapping.craters import CRATERS
from benchmark.migrations import CRATERS_V1, CRATERS_V2, CRATERS_V3, CRATERS_V4
from benchmark.results import read_results
from common.errors import UserError

NUMBERS = (
    "precision",
    "recall",
    "f1",
    "tp",
    "fp",
    "fn",
    "positives",
    "scored",
    "ambiguous",
    "predicted_crater_fraction",
    "strict_precision",
    "strict_recall",
    "strict_f1",
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two base task folders (no file shared) and the CTX scene (craters of W/4 for 256 px windows)."""
    root = tmp_path_factory.mktemp("crater-rows")
    folder_like(root / "base", per_class=6)
    folder_like(root / "other", classes=("a", "b"), per_class=5)
    ctx_scene_like(root / "data", diameter=64)
    return root


def crater_run(data, out, capsys, *extra, task=None, data_dir=None):
    """(exit status, stderr, rows of OUT.csv) of one tiny `bench craters run`."""
    rc = main(
        [
            *"craters run --shots 2 --seeds 0 --window 256 --stride 256 --image-size 16 --task".split(),
            task or f"folder:{data / 'base'}",
            "--data-dir",
            str(data_dir or data / "data"),
            "--cache-dir",
            str(data / "cache"),
            "--work",
            str(out.parent / "work"),
            "--out",
            str(out),
            "--quiet",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    path = Path(f"{out}.csv")
    rows = list(csv.DictReader(open(path, newline=""))) if path.exists() else []
    return rc, err, rows


def refused(rc, err, *words):
    assert rc == 2 and err.count("\n") == 1, err
    for word in words:
        assert word in err, err


def test_rows_are_reused_only_under_the_same_inputs(data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out" / "ctx"
    method = ("--method", "simpleshot")
    rc, err, rows = crater_run(data, out, capsys, *method)
    assert rc == 0 and "map in" in err and len(rows) == 2, err  # smoothing none and mrf
    assert {r["task"] for r in rows} == {f"folder:{data / 'base'}"} and rows[0]["backbone"] == "efficientnet_lite0"
    assert rows[0]["method_version"] == "1" and rows[0]["config"] == '{"norm": "cl2n"}'
    assert rows[0]["git_commit"] == benchmark.provenance.git_commit()
    rc, err, again = crater_run(data, out, capsys, *method)
    assert rc == 0 and "map in" not in err and again == rows  # the same inputs: reused

    # another base task, another method option: other measurements, computed beside
    rc, err, rows = crater_run(data, out, capsys, *method, task=f"folder:{data / 'other'}")
    assert rc == 0 and "map in" in err and len(rows) == 4, err
    rc, err, rows = crater_run(data, out, capsys, "--method", "simpleshot:norm=l2n")
    assert rc == 0 and "map in" in err and len(rows) == 6, err
    assert rows[-1]["config"] == '{"norm": "l2n"}'

    before = Path(f"{out}.csv").read_bytes()
    # another backbone or image size: refused before any work, in one line
    refused(
        *crater_run(data, out, capsys, *method, "--backbone", "efficientnet_lite1")[:2],
        "backbone efficientnet_lite0",
        "this run uses efficientnet_lite1",
        "--fresh",
    )
    refused(*crater_run(data, out, capsys, *method, "--image-size", "24")[:2], "image size 16", "--fresh")
    # another method version: refused, and --fresh sets the old rows aside and recomputes
    monkeypatch.setattr(methods.simpleshot.SimpleShot, "version", 2)
    refused(
        *crater_run(data, out, capsys, *method)[:2],
        "1 rows of simpleshot K=2 smoothing none",
        "method version 1",
        "this run uses 2",
        "--fresh",
    )
    assert Path(f"{out}.csv").read_bytes() == before
    rc, err, rows = crater_run(data, out, capsys, *method, "--fresh")
    assert rc == 0 and "map in" in err, err
    assert sorted(
        r["method_version"] for r in rows if r["method"] == "simpleshot" and r["task"] == f"folder:{data / 'base'}"
    ) == ["2", "2"]
    aside = list(csv.DictReader(open(out.parent / "ctx.set-aside.csv", newline="")))
    assert [r["method_version"] for r in aside] == ["1", "1"]
    # rows of other code (another git commit): refused unless --reuse-stale
    monkeypatch.setattr(benchmark.provenance, "git_commit", lambda: "0123456789ab")
    refused(*crater_run(data, out, capsys, *method)[:2], "other code", "--reuse-stale")
    rc, err, again = crater_run(data, out, capsys, *method, "--reuse-stale")
    assert rc == 0 and "map in" not in err and again == rows, err
    refused(*crater_run(data, out, capsys, *method, "--reuse-stale", "--fresh")[:2], "exclude each other")


def test_changed_data_or_scene_is_not_reused(data, tmp_path, capsys):
    """An image of the base task or the crater file changed under the same names: other data, refused."""
    mine = tmp_path / "d"
    shutil.copytree(data / "base", mine / "base")
    shutil.copytree(data / "data", mine / "data")
    out = tmp_path / "out" / "ctx"

    def run():
        return crater_run(
            data, out, capsys, "--method", "simpleshot", task=f"folder:{mine / 'base'}", data_dir=mine / "data"
        )

    rc, err, rows = run()
    assert rc == 0, err
    image = next((mine / "base" / "dunes").iterdir())
    image.write_bytes(image.read_bytes()[:-1] + bytes([image.read_bytes()[-1] ^ 1]))  # one bit of one image
    refused(*run()[:2], "on other data", rows[0]["data"], "--fresh")
    shutil.copytree(data / "base", mine / "base", dirs_exist_ok=True)  # the data as it was: its rows again
    rc, err, _ = run()
    assert rc == 0 and "map in" not in err, err
    boxes = mine / "data" / "ctx-murray-craters" / "selected_craters_XY.txt"
    boxes.write_text(boxes.read_text() + "10.0 10.0 20.0 20.0\n")  # one more crater
    refused(*run()[:2], "on another scene", "--fresh")


def old_file(rows: list[dict], columns, path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue())


@pytest.mark.parametrize("version, columns", [(3, CRATERS_V3), (2, CRATERS_V2), (1, CRATERS_V1)])
def test_migrate_needs_the_facts_and_keeps_every_number(data, tmp_path, capsys, monkeypatch, version, columns):
    out = tmp_path / "out" / "ctx"
    rc, err, made = crater_run(data, out, capsys, "--method", "simpleshot", "--method", "simpleshot:norm=l2n")
    assert rc == 0, err
    path = tmp_path / "old.csv"
    old_file(made, columns, path)
    old = path.read_text()
    with pytest.raises(UserError, match="bench migrate") as exc:
        read_results(path, CRATERS)
    assert f"has schema {version}," in str(exc.value) and "--task NAME --backbone NAME" in str(exc.value)

    task = f"folder:{data / 'base'}"
    for facts, words in [
        (CraterFacts(), "--task NAME --backbone NAME"),
        (CraterFacts(task=task), "--task NAME --backbone NAME"),
        (CraterFacts(backbone="efficientnet_lite0"), "--task NAME --backbone NAME"),
        (CraterFacts(task, "resnet-nope"), "unknown backbone"),
        (CraterFacts(task, "efficientnet_lite0", {"simpleshott": 1}), "simpleshott"),
        (CraterFacts(task, "efficientnet_lite0", {"simpleshot": 2}), "versions 1 to 1"),
        (CraterFacts(str(data / "nope"), "efficientnet_lite0"), "--task"),
    ]:
        with pytest.raises(UserError, match=re.escape(words)) as exc:
            migrate_file(path, data / "data", facts=facts)
        assert "\n" not in str(exc.value)
        assert path.read_text() == old  # nothing written
    monkeypatch.setattr(methods.simpleshot.SimpleShot, "version", 2)  # a method past version 1 must be stated
    with pytest.raises(UserError, match=re.escape("--method-version simpleshot=V")):
        migrate_file(path, data / "data", facts=CraterFacts(task, "efficientnet_lite0"))
    assert path.read_text() == old
    monkeypatch.setattr(methods.simpleshot.SimpleShot, "version", 1)

    said = migrate_file(path, data / "data", facts=CraterFacts(task, "efficientnet_lite0"))
    assert f"migrated from schema {version} " in said and "simpleshot 1" in said
    migrated = list(csv.DictReader(open(path, newline="")))
    assert len(migrated) == len(made) == 4
    for new, was in zip(migrated, made):  # every field the run wrote, the git commit aside (unrecorded)
        assert new == {**was, "git_commit": "unrecorded"}
    old_rows = list(csv.DictReader(io.StringIO(old)))
    assert all(new[c] == was[c] for new, was in zip(migrated, old_rows) for c in NUMBERS)  # the same text
    assert "already current" in migrate_file(path, data / "data")
    # a rerun takes them only as rows of other code
    shutil.copy(path, f"{out}.csv")
    refused(*crater_run(data, out, capsys, "--method", "simpleshot")[:2], "git commit unrecorded", "--reuse-stale")
    rc, err, _ = crater_run(data, out, capsys, "--method", "simpleshot", "--reuse-stale")
    assert rc == 0 and "map in" not in err, err


def test_schema_4_rows_gain_the_weights_digest_without_stated_facts(data, tmp_path, capsys):
    """Crater rows of schema 4 name their task and backbone: migrating adds the built-in backbone's weights
    digest and transductive = 0, and keeps every other field's text."""
    out = tmp_path / "out" / "ctx"
    rc, err, made = crater_run(data, out, capsys, "--method", "simpleshot")
    assert rc == 0, err and {r["transductive"] for r in made} == {"0"}
    path = tmp_path / "old.csv"
    old_file(made, CRATERS_V4, path)
    with pytest.raises(UserError, match="has schema 4,"):
        read_results(path, CRATERS)
    said = migrate_file(path, tmp_path / "no-data-needed")
    assert f"migrated from schema 4 (weights: {made[0]['weights']}, transductive: 0, isolated: 0)" in said
    assert list(csv.DictReader(open(path, newline=""))) == made


def test_migrate_states_its_facts_on_the_command_line(data, tmp_path, capsys):
    out = tmp_path / "out" / "ctx"
    rc, err, made = crater_run(data, out, capsys, "--method", "simpleshot")
    path = tmp_path / "old.csv"
    old_file(made, CRATERS_V3, path)
    rc = main(["migrate", str(path), "--data-dir", str(data / "data")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--task NAME --backbone NAME" in err, err
    rc = main(
        [
            "migrate",
            str(path),
            "--data-dir",
            str(data / "data"),
            "--task",
            f"folder:{data / 'base'}",
            *"--backbone efficientnet_lite0 --method-version simpleshot".split(),
        ]
    )
    assert rc == 2 and "NAME=V" in capsys.readouterr().err
    rc = main(
        [
            "migrate",
            str(path),
            "--data-dir",
            str(data / "data"),
            "--task",
            f"folder:{data / 'base'}",
            *"--backbone efficientnet_lite0 --method-version simpleshot=1".split(),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert [r["method_version"] for r in csv.DictReader(open(path, newline=""))] == ["1", "1"]


def test_shipped_crater_rows_say_what_their_md_says():
    """results/ctx-craters.csv was migrated with the facts of results/ctx-craters.md (docs/mapping.md): its base task,
    backbone, image size and grid, and its command's method labels (no options: default configs)."""
    root = Path(__file__).resolve().parents[1] / "results"
    md = (root / "ctx-craters.md").read_text()
    frame = read_results(root / "ctx-craters.csv", CRATERS)
    assert len(frame) == 120
    task = re.search(r"base task `([^`]+)`", md).group(1)
    backbone = re.search(r"; backbone ([\w-]+)\.", md).group(1)
    window, stride, size = map(
        int,
        re.search(
            r"Windows of (\d+) px every (\d+) px \(\d+ windows\), resized to "
            r"(\d+) px",
            md,
        ).groups(),
    )
    command = re.search(r"Command: `([^`]+)`", md).group(1)
    labels = re.findall(r"--method (\S+)", command)
    assert set(frame["task"]) == {task} and set(frame["backbone"]) == {backbone} and set(frame["source"]) == {""}
    assert set(frame["window"]) == {window} and set(frame["stride"]) == {stride} and set(frame["image_size"]) == {size}
    assert set(frame["method"]) == set(labels) and all(":" not in label for label in labels)
    assert "--task" not in command and "--backbone" not in command and "--source" not in command
    # sdft's rows predate its seeded step 1 (version 2): they are version 1 and never taken for current sdft
    versions = dict(frame.groupby("method")["method_version"].first())
    assert versions == {"protonet": 1, "linear-probe": 1, "sdft": 1}
    assert set(frame["git_commit"]) == {"unrecorded"}


def test_out_naming_the_csv_or_the_table_means_the_same_stem():
    from benchmark.commands.craters import out_stem

    assert out_stem("runs/ctx") == "runs/ctx"
    assert out_stem("runs/ctx.csv") == out_stem("runs/ctx.md") == out_stem("runs/ctx.CSV") == "runs/ctx"
    assert out_stem("runs/ctx.v2") == "runs/ctx.v2"  # any other dot is part of the name


def test_a_new_beta_adds_only_the_smoothed_rows(data, tmp_path, capsys):
    """Another --beta is another measurement of the smoothed rows only: the unsmoothed row of the same seed is
    reused, not appended a second time beside the new map's smoothed row."""
    out = tmp_path / "out" / "ctx"
    rc, err, rows = crater_run(data, out, capsys, "--method", "simpleshot")
    assert rc == 0 and len(rows) == 2, err
    rc, err, rows = crater_run(data, out, capsys, "--method", "simpleshot", "--beta", "2")
    assert rc == 0 and "map in" in err, err
    assert sorted((r["smoothing"], r["strength"]) for r in rows) == [("mrf", "1.0"), ("mrf", "2.0"), ("none", "0.0")]


def error_lines(err: str) -> list[str]:
    assert "internal error" not in err and "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("crasher, stage, detail", CRASHES)
def test_a_crashing_plugin_fails_alone(data, tmp_path, capsys, crasher, stage, detail):
    """A plugin that raises or exits in prepare, fit or predict is that plugin's failure, as in bench run: one
    line naming it and the stage, the method after it still maps and all its rows are written (and tabled),
    and the exit status says a method failed."""
    out = tmp_path / "out" / "ctx"
    rc, err, rows = crater_run(data, out, capsys, "--method", crasher, "--method", "protonet")
    (line,) = error_lines(err)
    assert rc == 3 and line.startswith(f"error: method {crasher} failed in {stage} at K=2, draw seed 0: "), err
    assert detail in line, err
    assert [(r["method"], r["smoothing"]) for r in rows] == [("protonet", "none"), ("protonet", "mrf")], err
    table = Path(f"{out}.md").read_text()
    assert "| protonet |" in table and crasher not in table


def test_fail_fast_stops_at_the_crashing_plugin(data, tmp_path, capsys):
    out = tmp_path / "out" / "ctx"
    rc, err, rows = crater_run(data, out, capsys, "--method", "crash-fit", "--method", "protonet", "--fail-fast")
    assert rc == 3 and error_lines(err) == [
        "error: method crash-fit failed in fit at K=2, draw seed 0: RuntimeError: boom in fit"
    ], err
    assert rows == [] and "map in" not in err


def test_only_crashing_plugins_write_no_table(data, tmp_path, capsys):
    out = tmp_path / "out" / "ctx"
    rc, err, rows = crater_run(data, out, capsys, "--method", "crash-fit", "--method", "crash-predict")
    assert rc == 3 and len(error_lines(err)) == 2 and rows == [], err
    assert not Path(f"{out}.md").exists()


def test_bad_input_met_inside_a_method_is_still_bad_input(data, tmp_path, capsys):
    """A UserError (the harness's word for bad input, which names the input at fault) raised while a method
    prepares is no failure of the method: it ends the run in its own line, exit status 2."""
    out = tmp_path / "out" / "ctx"
    rc, err, rows = crater_run(data, out, capsys, "--method", "bad-input-prepare", "--method", "protonet")
    assert rc == 2 and error_lines(err) == ["error: image /data/x.png cannot be decoded; replace or remove it"], err
    assert rows == []
