"""The same image is one image, a list means what its name says.

Each case here ran silently before: copies of one file under two names were two images (on both sides of an
episode, in two classes, in the train and the test split), a source could hold the task's images re-encoded or
its scenes, a Mars-Bench K-shot list could hold any count, `--refresh-data` gave stale rows the new identity, and
a class no episode could draw was not named.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fakes import csv_like, folder_like, hirise_v1_like, write_image
from fakes_marsbench import marsbench_like, write_annotation
from fakes_methods import instant_method
from fakes_reliability import make_folder_dataset, read_rows
from PIL import Image

from benchmark.cli import main
from common.errors import UserError
from tasks.datasets import load_dataset
from tasks.protocols import fixed_k_draw, fixed_k_sets
from tasks.registry import load_task

ProbeIdentity = instant_method("probe-identity")


def annotation_rows(root: Path) -> list[list[str]]:
    with open(root / "annotation.csv", newline="") as f:
        return list(csv.reader(f))[1:]


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


# -- 1. byte-identical copies --------------------------------------------------------------------------------------


def test_copies_within_a_class_are_one_scene_and_never_on_both_sides(tmp_path, capsys):
    from tasks.episodes import PoolIndex, sample_episodes

    root = folder_like(tmp_path / "set", per_class=6)
    shutil.copy(root / "dunes" / "img0.png", root / "dunes" / "copy.png")
    table = load_task(f"folder:{root}", tmp_path).table
    err = " ".join(capsys.readouterr().err.split())
    assert (
        "1 file(s) are byte-identical copies of another (1 image(s) held more than once), e.g. dunes/copy.png = "
        "dunes/img0.png" in err
    )
    copies = [i for i, p in enumerate(table.paths) if p.endswith(("dunes/img0.png", "dunes/copy.png"))]
    assert len(copies) == 2 and len(set(table.groups[copies])) == 1
    # episodes drawn from every row, both copies in the pool: they never sit on both sides
    pool = PoolIndex(table.labels, table.groups, np.arange(len(table)))
    drawn = sample_episodes("t", "s", pool, 3, 1, 4, 100, 0, table.class_names)
    both = [
        e for e, (s, q) in enumerate(zip(drawn.support, drawn.query)) if set(copies) & set(s) and set(copies) & set(q)
    ]
    assert both == []


def test_a_table_without_copies_is_returned_as_it_was(tmp_path):
    from tasks.datasets.copies import identify_copies

    root = folder_like(tmp_path / "set", per_class=6)
    table = load_dataset(f"folder:{root}", tmp_path)
    assert identify_copies(table) is table and list(table.groups) == sorted(table.groups, key=list(table.groups).index)


def test_a_copy_or_a_link_in_another_class_is_refused_naming_both(tmp_path, capsys):
    root = folder_like(tmp_path / "set", per_class=6)
    shutil.copy(root / "dunes" / "img0.png", root / "craters" / "dup.png")
    with pytest.raises(UserError, match="hold the same bytes under two labels") as exc:
        load_task(f"folder:{root}", tmp_path)
    assert "dunes/img0.png (dunes)" in str(exc.value) and "craters/dup.png (craters)" in str(exc.value)
    (root / "craters" / "dup.png").unlink()
    os.symlink(root / "plains" / "img1.png", root / "dunes" / "link.png")
    assert (
        main(
            [
                *"run --method probe-identity --task".split(),
                f"folder:{root}",
                "--data-dir",
                str(tmp_path),
                "--cache-dir",
                str(tmp_path / "c"),
                "--out",
                str(tmp_path / "r.csv"),
                "--quiet",
            ]
        )
        == 2
    )
    line = error_line(capsys)
    assert "dunes/link.png (dunes)" in line and "plains/img1.png (plains)" in line and "two labels" in line
    assert not (tmp_path / "r.csv").exists()


def test_a_test_image_copied_into_train_is_refused_and_train_val_copies_are_one_scene(tmp_path, capsys):
    root = marsbench_like(tmp_path / "set")
    rows = annotation_rows(root)
    test_row = next(r for r in rows if r[3] == "test" and r[1] == "aec")
    shutil.copy(root / "data" / "test" / "aec" / test_row[0], root / "data" / "train" / "aec" / "copied.png")
    write_annotation(root / "annotation.csv", [tuple(r) for r in rows] + [("copied.png", "aec", "0", "train")])
    with pytest.raises(
        UserError,
        match=r"\(split train\) .* \(split test\) hold the same bytes on both sides|"
        r"\(split test\) .* \(split train\) hold the same bytes on both sides",
    ):
        load_task(f"marsbench:{root}", tmp_path)
    val_row = next(r for r in rows if r[3] == "val" and r[1] == "aec")
    shutil.copy(root / "data" / "val" / "aec" / val_row[0], root / "data" / "train" / "aec" / "copied.png")
    table = load_task(f"marsbench:{root}", tmp_path).table
    names = [Path(p).name for p in table.paths]
    assert table.groups[names.index("copied.png")] == table.groups[names.index(val_row[0])]
    assert "byte-identical copies" in capsys.readouterr().err


def test_a_csv_copy_across_base_and_target_is_refused(tmp_path):
    labels = csv_like(tmp_path / "set")
    lines = labels.read_text().splitlines()
    base = next(line for line in lines[1:] if line.endswith(",base"))
    target = next(line for line in lines[1:] if line.endswith(",target") and line.split(",")[1] == base.split(",")[1])
    shutil.copy(labels.parent / base.split(",")[0], labels.parent / target.split(",")[0])
    with pytest.raises(UserError, match="both sides of the train/test split"):
        load_task(f"csv:{labels}", tmp_path)


def test_a_built_in_dataset_merges_the_observations_of_a_copy(tmp_path, capsys):
    data = hirise_v1_like(tmp_path / "data")
    root = data / "hirise-v1"
    first = (root / "labels-map-proj.txt").read_text().splitlines()[0].split()
    copy = "ESP_099999_1000_RED-copy.jpg"  # another observation's name, the same bytes
    shutil.copy(root / "map-proj" / first[0], root / "map-proj" / copy)
    with open(root / "labels-map-proj.txt", "a") as f:
        f.write(f"{copy} {first[1]}\n")
    table = load_task("hirise-regions", data).table
    names = [Path(p).name for p in table.paths]
    assert table.groups[names.index(copy)] == table.groups[names.index(first[0])] == "ESP_010000_1000"
    assert "hirise-v1: 1 file(s) are byte-identical copies" in capsys.readouterr().err


# -- a source: re-encoded copies, near-identical images, shared scenes --------------------------------------------


@pytest.fixture
def hirise(tmp_path):
    return hirise_v1_like(tmp_path / "data", per_class={0: 10, 1: 10, 2: 10, 6: 10}, groups=5)


def source_folder(root: Path, files, save) -> Path:
    for i, path in enumerate(files):
        out = root / "ab"[i % 2] / f"other{i}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        save(Image.open(path), out)
    return root


def test_a_source_holding_the_tasks_images_re_encoded_is_refused(hirise, tmp_path):
    files = sorted((hirise / "hirise-v1" / "map-proj").iterdir())[:6]
    src = source_folder(tmp_path / "src", files, lambda img, out: img.save(out))  # PNG: the JPEG's pixels
    with pytest.raises(
        UserError,
        match=r"holds 6 image\(s\) of task hirise-regions with the same pixels at 32 px in "
        r"other bytes",
    ) as exc:
        load_task("hirise-regions", hirise, source=f"folder:{src}", image_size=32)
    assert "\n" not in str(exc.value) and "other0.png" in str(exc.value) and files[0].name in str(exc.value)


def test_a_source_of_lossy_copies_is_a_notice_with_the_count(hirise, tmp_path, capsys):
    files = sorted((hirise / "hirise-v1" / "map-proj").iterdir())[:6]
    src = source_folder(tmp_path / "src", files, lambda img, out: img.save(out.with_suffix(".jpg"), quality=95))
    load_task("hirise-regions", hirise, source=f"folder:{src}", image_size=32)
    err = " ".join(capsys.readouterr().err.split())
    assert f"--source folder:{src} holds 6 image(s) nearly identical to one of task hirise-regions's" in err


def scene_task(root: Path, observations) -> Path:
    """A CSV task whose group column names HiRISE observations: two classes, base/target by scene."""
    rows = ["path,label,group,split"]
    for g, obs in enumerate(observations):
        for label, name in enumerate(("crater", "dune")):
            for i in range(3):
                rel = f"img/{name}_{g}_{i}.png"
                write_image(root / rel, label + 4, g, size=14)
                rows.append(f"{rel},{name},{obs},{'target' if g % 2 else 'base'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def test_a_source_sharing_target_scenes_is_a_notice_and_refused_when_disjoint(hirise, tmp_path, capsys):
    held = sorted(
        {
            line.split("_RED")[0].removeprefix("thresh-1-")
            for line in (hirise / "hirise-v1" / "labels-map-proj.txt").read_text().split()[::2]
        }
    )
    labels = scene_task(tmp_path / "v3", held[:3] + ["ESP_077777_1111", "ESP_088888_2222", "ESP_066666_3333"])
    task = load_task(f"csv:{labels}", hirise, source="hirise-v1", image_size=32)
    err = " ".join(capsys.readouterr().err.split())
    # the target pool: scenes 1, 3, 5 = held[1], ESP_077777_1111, ESP_066666_3333; v1 holds held[1]
    assert (
        f"--source hirise-v1 holds 1 of the 3 scenes of task csv:{labels}'s target pool (HiRISE observation ids: "
        f"{held[1]})" in err
    )
    assert task.notes() == ["source hirise-v1 holds 1 of the 3 target scenes (HiRISE observation ids)"]
    with pytest.raises(UserError, match="--source-disjoint refuses it"):
        load_task(f"csv:{labels}", hirise, source="hirise-v1", image_size=32, source_disjoint=True)
    out = tmp_path / "r.csv"
    argv = [
        *"run --method probe-identity --task".split(),
        f"csv:{labels}",
        "--data-dir",
        str(hirise),
        *"--source hirise-v1 --shots 1 --ways 2 --queries 2 --episodes 3 --image-size 32 --cache-dir".split(),
        str(tmp_path / "c"),
        "--out",
        str(out),
        "--quiet",
    ]
    capsys.readouterr()
    assert main(argv) == 0
    assert "source hirise-v1 holds 1 of the 3 target scenes" in " ".join(capsys.readouterr().out.split())
    assert main(argv + ["--source-disjoint"]) == 2 and "--source-disjoint refuses it" in error_line(capsys)


def test_a_source_tasks_fingerprint_does_not_depend_on_where_the_folders_lie(hirise, tmp_path):
    """The task's and the source's images may lie far apart (ctx-craters' windows in the cache folder): no path
    between them enters the data identity."""
    src = folder_like(tmp_path / "one" / "src", per_class=6)
    first = load_task("hirise-regions", hirise, source=f"folder:{src}", image_size=32).fingerprint()
    moved = shutil.copytree(src, tmp_path / "two" / "deeper" / "src")
    assert load_task("hirise-regions", hirise, source=f"folder:{moved}", image_size=32).fingerprint() == first
    mine = folder_like(tmp_path / "three" / "mine", per_class=6)
    first = load_task(f"folder:{mine}", hirise, source="hirise-v1", image_size=32).fingerprint()
    moved = shutil.copytree(mine, tmp_path / "four" / "deeper" / "mine")
    assert load_task(f"folder:{moved}", hirise, source="hirise-v1", image_size=32).fingerprint() == first


# -- classes no episode can draw ----------------------------------------------------------------------------------


def test_classes_no_episode_can_draw_are_named_once_with_why(tmp_path, capsys):
    rows = ["path,label,group,split"]
    for label, name, n, scenes in (
        ("a", "alpha", 6, 6),
        ("b", "beta", 6, 6),
        ("c", "gamma", 2, 2),
        ("d", "delta", 6, 1),
        ("e", "eps", 4, 4),
    ):
        for i in range(n):
            write_image(tmp_path / "img" / f"{label}{i}.png", ord(label), i)
            rows.append(f"img/{label}{i}.png,{name},{label}{i % scenes},{'target' if i % 2 else 'base'}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    task = load_task(f"csv:{tmp_path / 't.csv'}", tmp_path)
    task = type(task)(task.name, task.description, task.table, task.base, np.arange(len(task.table)))
    capsys.readouterr()
    for k, seed in ((1, 0), (2, 0), (2, 1)):  # a run at 1 and 2 shots, then the 2-shot one again
        task.episodes(2, k, 2, 5, seed=seed)
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("can draw") == 1  # once, though three episode sets were drawn
    assert (
        "no 2-query episode can draw delta (6 images in 1 scene(s), which split into no 1 + 2 scene-disjoint "
        "parts at any K); gamma (2 image(s), fewer than 1 + 2 at any K)" in err
    )
    task.episodes(2, 3, 2, 5, seed=0)
    assert "no 3-shot 2-query episode can draw eps (4 image(s), fewer than 3 + 2)" in capsys.readouterr().err


# -- Mars-Bench K-shot lists --------------------------------------------------------------------------------------


def shot_list(root: Path, per_class: dict, extra=()) -> None:
    rows = annotation_rows(root)
    picked = [tuple(r) for r in rows if r[3] != "train"]
    for name, n in per_class.items():
        picked += [tuple(r) for r in rows if r[3] == "train" and r[1] == name][:n]
    write_annotation(root / "few_shot" / "2_shot.csv", picked + list(extra))


def test_a_k_shot_list_with_wrong_counts_is_refused_naming_each_class(tmp_path):
    root = marsbench_like(tmp_path / "set")
    task = load_task(f"marsbench:{root}", tmp_path)
    shot_list(root, {"aec": 3, "cra": 1, "smo": 2})
    with pytest.raises(
        UserError,
        match=r"2_shot.csv is not a 2-shot list: it holds 3 of aec, 1 of cra; a 2-shot list "
        r"holds exactly 2 distinct training images",
    ):
        fixed_k_draw(task, 2)


def test_a_k_shot_list_naming_one_image_twice_is_refused(tmp_path):
    root = marsbench_like(tmp_path / "set")
    task = load_task(f"marsbench:{root}", tmp_path)
    rows = annotation_rows(root)
    twice = next(tuple(r) for r in rows if r[3] == "train" and r[1] == "aec")
    shot_list(root, {"aec": 1, "cra": 2, "smo": 2}, extra=[twice])
    with pytest.raises(UserError, match=rf"lists train/aec/{twice[0]} twice"):
        fixed_k_sets(task, 2, [0])


def test_a_k_shot_list_takes_all_of_a_smaller_class_named_capped(tmp_path):
    counts = {
        "train": {"aec": 4, "cra": 1, "smo": 4},
        "val": {"aec": 1, "cra": 1, "smo": 1},
        "test": {"aec": 2, "cra": 2, "smo": 2},
    }
    root = marsbench_like(tmp_path / "set", counts=counts, shot_lists=(2,))
    task = load_task(f"marsbench:{root}", tmp_path)
    assert fixed_k_draw(task, 2) == ("marsbench-list", ("cra (1)",))
    assert len(fixed_k_sets(task, 2, [0])[0].train_idx) == 5


def test_fixed_k_header_says_the_pre_training_pool_and_leaderboard_the_capped_classes(tmp_path, capsys):
    counts = {
        "train": {"aec": 4, "cra": 1, "smo": 4},
        "val": {"aec": 1, "cra": 1, "smo": 1},
        "test": {"aec": 2, "cra": 2, "smo": 2},
    }
    root = marsbench_like(tmp_path / "domars16k", counts=counts, shot_lists=(2,))
    out = tmp_path / "fk.csv"
    assert (
        main(
            [
                "fixedk",
                "--task",
                f"marsbench:{root}",
                "--data-dir",
                str(tmp_path),
                "--cache-dir",
                str(tmp_path / "c"),
                *"--shots 2 --seeds 0 --out".split(),
                str(out),
                "--quiet",
                "--method",
                "probe-identity",
            ]
        )
        == 0
    )
    printed = " ".join(capsys.readouterr().out.split())
    assert "pre-training pool: the val split (3 images), neither drawn from nor scored" in printed
    assert main(["leaderboard", "--fixedk", str(out), "--format", "markdown"]) == 0
    assert "capped (fewer than 2 training images, all taken): cra (1)" in capsys.readouterr().out


# -- bench migrate --refresh-data ---------------------------------------------------------------------------------


def run_rows(data: Path, out: Path) -> int:
    return main(
        [
            *"run --method probe-identity --task".split(),
            f"folder:{data}",
            *"--shots 1 --ways 3 --queries 2 --episodes 4 --image-size 16 --quiet --cache-dir".split(),
            str(data.parent / "cache"),
            "--out",
            str(out),
        ]
    )


def test_refresh_data_refuses_rows_whose_pixels_changed_and_keeps_them(tmp_path, capsys):
    data = make_folder_dataset(tmp_path / "data", per_class=8, size=16)
    out = tmp_path / "r.csv"
    assert run_rows(data, out) == 0
    before = out.read_bytes()
    assert main(["migrate", str(out), "--refresh-data", "--data-dir", str(tmp_path)]) == 0
    assert out.read_bytes() == before  # unchanged data: the identity is the same
    Image.fromarray(np.full((16, 16, 3), 99, np.uint8)).save(data / "class1" / "3.png")  # new pixels, same name
    capsys.readouterr()
    assert main(["migrate", str(out), "--refresh-data", "--data-dir", str(tmp_path)]) == 2
    line = error_line(capsys)
    assert f"cannot refresh {out}: 4 row(s) of task folder:{data} were made on other data" in line
    assert out.read_bytes() == before  # refused: no row lost, none relabelled
    assert run_rows(data, out) == 2 and "on other data" in error_line(capsys)  # and a run does not take them


def test_refresh_data_gives_rows_of_an_earlier_identity_the_current_one(tmp_path):
    from tasks.registry import earlier_fingerprints

    data = make_folder_dataset(tmp_path / "data", per_class=8, size=16)
    out = tmp_path / "r.csv"
    assert run_rows(data, out) == 0
    rows = read_rows(out)
    task = load_task(f"folder:{data}", tmp_path)
    old = min(earlier_fingerprints(task))  # what the first way of computing it gave for these files
    text = out.read_text().replace(rows[0]["data"], old)
    out.write_text(text)
    assert main(["migrate", str(out), "--refresh-data", "--data-dir", str(tmp_path)]) == 0
    assert {r["data"] for r in read_rows(out)} == {task.fingerprint()}
