"""The schema histories of benchmark/migrations.py: one ordered list of steps per table, which the live Schemas
follow and `bench migrate` runs in order; a file several versions behind goes through every step, and sdft's
rows end up with the config a run writes now."""

import csv
import io
import json

import pytest
from fake_results import fake_rows

from benchmark.commands.migrate import migrate_file
from benchmark.fixedk import FIXED_K
from benchmark.mapping.craters import CRATERS
from benchmark.migrations import (
    CRATERS_V5,
    EPISODES_V3,
    HISTORIES,
    SDFT_METHODS,
    Facts,
    History,
    Step,
    sdft_full_config,
)
from benchmark.provenance import method_config
from benchmark.results import EPISODES, append_rows, read_results
from benchmark.runner import MethodSpec
from common.errors import UserError
from methods.backbones import weights_digest
from methods.registry import create_method

# sdft's config as its rows recorded it when config() left out the step-2 options at the paper's values
SHORT = (
    '{"batch_size": 32, "epochs": 6, "head": "cosine", "lr": 0.0003, "lr_head": 0.001, "lr_top": 0.0001, '
    '"patience": 2, "scale": 10.0, "step1": true, "steps": 20, "top_blocks": 0, "val_folds": 8, '
    '"weight_decay": 0.0001}'
)
FUSED = SHORT.replace('"epochs": 6, ', '"epochs": 6, "fuse": 0.5, ')


@pytest.mark.parametrize("schema", [EPISODES, FIXED_K, CRATERS], ids=lambda s: s.name)
def test_each_live_schema_is_the_end_of_its_history(schema):
    history = HISTORIES[schema.name]
    versions = [step.version for step in history.steps]
    assert versions == list(range(versions[0], versions[0] + len(versions)))  # in order, none skipped
    assert history.version == schema.version and list(history.current) == list(schema.columns)
    assert not hasattr(schema, "previous") and not hasattr(schema, "older")  # the live Schema knows no history


def test_the_steps_run_in_order_from_the_files_version():
    ran = []

    def step(version):
        return Step(version, (f"v{version}",), f"lack {version}", lambda path, rows, facts: ran.append(version) or "")

    history = History("t", (step(1), step(2), step(3)), current=("v4",))
    assert history.version == 4 and history.version_of(["v2"], None) == 2 and history.version_of(["x"], None) is None
    history.migrate("p", [], 1, Facts())
    assert ran == [1, 2, 3]
    ran.clear()
    history.migrate("p", [], 2, Facts())
    assert ran == [2, 3]
    assert history.refusal("p", 2) == (
        "results file p has schema 2, whose rows do not record lack 2, nor lack 3; "
        "migrate it with `bench migrate p` or write to a new file with --out"
    )


# Options that SDFT gained after these schemas: rows of those versions were made without them, so a migrated
# config is today's config less these keys (micro_batch: step 1 in micro-batches, sdft version 3).
ADDED_SINCE = ("micro_batch",)


def config_then(method) -> str:
    config = json.loads(method_config(method))
    return json.dumps({k: v for k, v in config.items() if k not in ADDED_SINCE}, sort_keys=True, allow_nan=False)


@pytest.mark.parametrize(
    "label, short",
    [
        ("sdft", SHORT),
        ("sdft:fuse=0.5", FUSED),
        ("sdft-no-step1", SHORT.replace("true", "false")),
        ("sdft-linear-head", SHORT.replace('"cosine"', '"linear"')),
    ],
)
def test_an_old_sdft_config_becomes_the_one_a_run_writes_now(label, short):
    spec = MethodSpec.parse(label)
    now = config_then(create_method(spec.name, **spec.options))
    assert now != short and all(json.loads(now)[k] == v for k, v in json.loads(short).items())
    rows = [{"method": label, "config": short}, {"method": "protonet", "config": '{"x": 1}'}]
    assert sdft_full_config("p", rows, Facts()) == "full sdft configs: 1 rows"
    assert rows == [{"method": label, "config": now}, {"method": "protonet", "config": '{"x": 1}'}]
    assert sdft_full_config("p", rows, Facts()) == ""  # a full config stays as it is
    assert spec.name in SDFT_METHODS


def read_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def old_file(path, rows: list[dict], columns, **values) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({**r, **values} for r in rows)
    path.write_text(buf.getvalue())
    return buf.getvalue()


def current_rows(tmp_path) -> list[dict]:
    """Rows of sdft (as the code of these schemas wrote them, on the built-in backbone) and of another method."""
    frame = fake_rows({"sdft": 0.6, "sdft:fuse=0.5": 0.62, "protonet": 0.5}, shots=(5,), episodes=2)
    frame["weights"] = weights_digest("efficientnet_lite0")
    frame["config"] = [
        config_then(create_method(MethodSpec.parse(m).name, **MethodSpec.parse(m).options))
        if m.startswith("sdft")
        else c
        for m, c in zip(frame["method"], frame["config"])
    ]
    append_rows(tmp_path / "now.csv", frame.to_dict("records"))
    return read_rows(tmp_path / "now.csv")


def test_an_episode_file_two_versions_behind_goes_through_both_steps(tmp_path):
    """Schema 3 (no weights' digest, sdft's short config): refused in one line naming both lacks and the command;
    migrated, it is the file a current run writes, every other field's text kept."""
    now = current_rows(tmp_path)
    old_rows = [
        {**r, "config": SHORT if r["method"] == "sdft" else FUSED if r["method"] == "sdft:fuse=0.5" else r["config"]}
        for r in now
    ]
    path = tmp_path / "old.csv"
    old = old_file(path, old_rows, EPISODES_V3, schema="3")
    with pytest.raises(UserError) as exc:
        read_results(path)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"results file {path} has schema 3, whose rows do not record")
    assert "digest of their backbone's weights" in message and "sdft" in message
    assert f"`bench migrate {path}`" in message
    said = migrate_file(path, tmp_path / "no-data-needed")
    assert "migrated from schema 3 (weights: " in said and "full sdft configs: 4 rows" in said
    assert read_rows(path) == now
    lines = path.read_text().splitlines()
    for was, new in zip(old.splitlines()[1:], lines[1:]):  # the old fields' text, in place
        was_fields, new_fields = next(csv.reader([was])), next(csv.reader([new]))
        config = EPISODES_V3.index("config")
        assert (
            was_fields[1:config] + was_fields[config + 1 :]
            == new_fields[1:config] + new_fields[config + 1 : len(was_fields)]
        )
    assert "already current" in migrate_file(path, tmp_path)


def test_a_file_of_the_previous_version_is_told_by_its_schema_column(tmp_path):
    """Schema 4 has schema 5's header: its rows' `schema` column tells it, for reading, appending and migrating."""
    now = current_rows(tmp_path)
    path = tmp_path / "four.csv"
    old_file(
        path,
        [{**r, "config": SHORT if r["method"] == "sdft" else r["config"]} for r in now],
        EPISODES.columns,
        schema="4",
    )
    for attempt in (lambda: read_results(path), lambda: append_rows(path, now[:1])):
        with pytest.raises(UserError, match=rf"has schema 4, whose rows do not record .*`bench migrate {path}`"):
            attempt()
    assert "migrated from schema 4 (full sdft configs: 2 rows)" in migrate_file(path, tmp_path)
    assert [r for r in read_rows(path) if r["method"] != "sdft:fuse=0.5"] == [
        r for r in now if r["method"] != "sdft:fuse=0.5"
    ]
    header_only = tmp_path / "empty.csv"
    header_only.write_text(",".join(EPISODES.columns) + "\n")
    assert read_results(header_only).empty  # nothing to migrate: taken for the current version


def test_a_crater_file_of_schema_5_gains_its_schema_column_and_full_sdft_configs(tmp_path):
    row = {c: "0" for c in CRATERS_V5}
    row.update(
        method="sdft",
        config=SHORT,
        precision="0.5",
        recall="0.5",
        f1="0.5",
        predicted_crater_fraction="0.1",
        strict_precision="0.5",
        strict_recall="0.5",
        strict_f1="0.5",
        shots="5",
        window="256",
        stride="256",
        image_size="128",
        map_seconds="1.5",
        prepare_seconds="2.0",
        strength="",
        smoothing="none",
        backbone="efficientnet_lite0",
        weights="w",
    )
    path = tmp_path / "ctx.csv"
    old_file(path, [row], CRATERS_V5)
    with pytest.raises(UserError, match="has schema 5,"):
        read_results(path, CRATERS)
    assert "migrated from schema 5 (full sdft configs: 1 rows)" in migrate_file(path, tmp_path)
    (migrated,) = read_rows(path)
    assert migrated == {**row, "config": config_then(create_method("sdft")), "schema": "6"}
    assert len(read_results(path, CRATERS)) == 1


def test_a_migration_whose_rows_are_not_valid_leaves_the_file_untouched(tmp_path):
    """The migrated rows are checked before they replace the file: a row no current file may hold (an accuracy
    above 1) is refused in one line, and the old file stays as it was."""
    rows = current_rows(tmp_path)
    rows[0]["accuracy"] = "1.5"
    path = tmp_path / "old.csv"
    old = old_file(path, rows, EPISODES_V3, schema="3")
    with pytest.raises(UserError) as exc:
        migrate_file(path, tmp_path / "no-data-needed")
    assert "\n" not in str(exc.value) and "accuracy" in str(exc.value)
    assert path.read_text() == old
