"""Dataset loaders on generated fakes in the official layouts, the downloader (checksums, safe unpacking), and
`bench data download / verify`."""

import hashlib
import os

import numpy as np
import pytest
from fakes import (
    DOMARS_CODES,
    aid_like,
    csv_like,
    domars16k_like,
    evil_tar,
    evil_zip,
    folder_like,
    hirise_v1_like,
    tar_folder,
    write_image,
    zip_folder,
)

from benchmark.cli import main
from common.errors import UserError
from tasks.datasets import dataset_spec, load_dataset
from tasks.datasets.download import find_root, safe_extract


def one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --- loaders --------------------------------------------------------------------------------------------------


def test_hirise_v1_loader(tmp_path):
    table = load_dataset("hirise-v1", hirise_v1_like(tmp_path))
    assert len(table) == 24
    assert table.class_names == ("other", "crater", "dark_dune", "edge")  # id 5 absent: skipped, ids densified
    assert np.bincount(table.labels).tolist() == [8, 6, 6, 4]
    names = [os.path.basename(p) for p in table.paths]
    thresh = [i for i, n in enumerate(names) if n.startswith("thresh-1-")]
    assert thresh, "the fake must hold thresholded variants"
    for i in thresh:  # a thresholded crop belongs to its observation
        assert table.groups[i] == names[i].removeprefix("thresh-1-").split("_RED")[0]
    assert set(table.groups) == {f"ESP_{10000 + g:06d}_{1000 + c:04d}" for c in (0, 1, 2, 6) for g in range(4)}


def test_hirise_v1_bad_label_and_missing_image(tmp_path):
    data = hirise_v1_like(tmp_path)
    labels = data / "hirise-v1" / "labels-map-proj.txt"
    text = labels.read_text()
    labels.write_text(text + "ESP_000001_0001_RED-9999.jpg 9\n")
    with pytest.raises(UserError, match="label id 9 is not defined"):
        load_dataset("hirise-v1", data)
    labels.write_text(text + "ESP_000001_0001_RED-9999.jpg 1\n")
    with pytest.raises(UserError, match="ESP_000001_0001_RED-9999.jpg listed in .* does not exist"):
        load_dataset("hirise-v1", data)


def test_aid_loader(tmp_path):
    table = load_dataset("aid", aid_like(tmp_path))
    assert table.class_names == ("Airport", "Beach", "Desert")
    assert np.bincount(table.labels).tolist() == [3, 3, 3]
    assert len(set(table.groups)) == 9  # every AID image is its own scene


@pytest.mark.parametrize("top", ["data", None])
def test_domars16k_loader_with_and_without_top_folder(tmp_path, top):
    table = load_dataset("domars16k", domars16k_like(tmp_path, top=top))
    assert table.class_names == tuple(sorted(DOMARS_CODES))
    assert len(table) == 3 * 3 * 3 * 2
    assert {s: int((table.splits == s).sum()) for s in ("train", "val", "test")} == {"train": 18, "val": 18, "test": 18}
    for path, group in zip(table.paths, table.groups):
        assert os.path.basename(path).startswith(group + "_CX")
        assert "_CX" not in group
    assert len(set(table.groups)) == 27  # products x classes x splits in the fake


def test_domars16k_unknown_class_and_bad_file_name(tmp_path):
    data = domars16k_like(tmp_path)
    bad = write_image(data / "domars16k" / "data" / "train" / "xyz" / "B01_000001_1234_XN_12S345W_CX0_CY0.jpg", 0)
    with pytest.raises(UserError, match=r"unknown class code 'xyz' in .*train/xyz") as exc:
        load_dataset("domars16k", data)
    assert "\n" not in str(exc.value)
    bad.unlink()
    bad.parent.rmdir()
    odd = write_image(data / "domars16k" / "data" / "val" / "cra" / "tile7.jpg", 1)
    with pytest.raises(UserError, match=f"{odd}.* is not named <CTX product id>_CX<x>_CY<y>.jpg"):
        load_dataset("domars16k", data)


def test_domars16k_without_splits_is_a_one_line_error(tmp_path):
    (tmp_path / "domars16k" / "something").mkdir(parents=True)
    with pytest.raises(UserError, match="no train/val/test folders"):
        load_dataset("domars16k", tmp_path)


def test_folder_and_csv_datasets(tmp_path):
    table = load_dataset(f"folder:{folder_like(tmp_path / 'mine')}", tmp_path)
    assert table.class_names == ("craters", "dunes", "plains")
    assert len(table) == 12 and len(set(table.groups)) == 12
    csv = csv_like(tmp_path / "csvset")
    table = load_dataset(f"csv:{csv}", tmp_path)
    assert table.class_names == ("craters", "dunes")
    assert len(table) == 12
    assert set(table.groups) == {f"{c}{g}" for c in ("dunes", "craters") for g in range(3)}
    assert set(table.splits) == {"base", "target"}
    assert all(os.path.isfile(p) for p in table.paths)


# --- downloader -----------------------------------------------------------------------------------------------


def digests(path):
    data = path.read_bytes()
    return hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()


@pytest.fixture
def domars_zip(tmp_path):
    """The official archive's shape: data.zip holding data/{train,val,test}/..."""
    source = domars16k_like(tmp_path / "src", top=None) / "domars16k"
    return zip_folder(source, tmp_path / "data.zip", arcroot="data")


def test_download_verifies_md5_and_unpacks(tmp_path, domars_zip):
    md5, _ = digests(domars_zip)
    download = dataset_spec("domars16k").download
    data_dir = tmp_path / "datadir"
    dest = download(data_dir, md5=md5, url=domars_zip.as_uri())
    assert dest == data_dir / "domars16k"
    assert sorted(p.name for p in dest.iterdir()) == ["test", "train", "val"]  # root found inside data/
    assert len(load_dataset("domars16k", data_dir)) == 54
    assert sorted(p.name for p in data_dir.iterdir()) == ["domars16k"]  # no temporary file left


def test_download_refuses_checksum_mismatch_and_deletes_the_file(tmp_path, domars_zip):
    _, sha = digests(domars_zip)
    wrong = ("0" if sha[0] != "0" else "1") + sha[1:]
    data_dir = tmp_path / "datadir"
    with pytest.raises(UserError, match=f"checksum mismatch .* expected sha256 {wrong}, got {sha}") as exc:
        dataset_spec("domars16k").download(data_dir, sha256=wrong, url=domars_zip.as_uri())
    assert "\n" not in str(exc.value)
    assert list(data_dir.iterdir()) == []  # neither the download nor a dataset folder


def test_download_without_checksum_says_how_to_pass_one(tmp_path, domars_zip):
    with pytest.raises(UserError, match=r"--md5 HEX.*--sha256 HEX"):
        dataset_spec("domars16k").download(tmp_path / "d", url=domars_zip.as_uri())
    with pytest.raises(UserError, match="--md5 must be 32 hexadecimal digits"):
        dataset_spec("domars16k").download(tmp_path / "d", md5="abc", url=domars_zip.as_uri())
    assert not (tmp_path / "d" / "domars16k").exists()


def test_download_of_a_hirise_tarball_with_a_top_folder(tmp_path):
    source = hirise_v1_like(tmp_path / "src") / "hirise-v1"
    archive = tar_folder(source, tmp_path / "hirise.tar.gz", arcroot="hirise-map-proj")
    md5, sha = digests(archive)
    data_dir = tmp_path / "datadir"
    dataset_spec("hirise-v1").download(data_dir, md5=md5, sha256=sha, url=archive.as_uri())
    assert len(load_dataset("hirise-v1", data_dir)) == 24
    with pytest.raises(UserError, match="already in"):  # never overwrites a dataset folder
        dataset_spec("hirise-v1").download(data_dir, md5=md5, url=archive.as_uri())


def test_download_failure_is_one_line(tmp_path):
    with pytest.raises(UserError, match="download of .* failed"):
        dataset_spec("domars16k").download(tmp_path, md5="0" * 32, url=(tmp_path / "absent.zip").as_uri())
    assert not (tmp_path / "domars16k").exists()
    assert [p for p in tmp_path.iterdir()] == []


@pytest.mark.parametrize("member", ["../escaped.txt", "/tmp/absolute-escape.txt", "data/../../escaped.txt"])
def test_zip_path_traversal_is_refused(tmp_path, member):
    archive = evil_zip(tmp_path / "evil.zip", member)
    dest = tmp_path / "out" / "inner"
    with pytest.raises(UserError, match="unsafe member"):
        safe_extract(archive, dest)
    assert not (tmp_path / "out" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not list(dest.rglob("*"))  # refused before anything was written


def test_tar_path_traversal_and_escaping_links_are_refused(tmp_path):
    for i, (member, link) in enumerate(
        [("../escaped.txt", None), ("link", "../../etc/passwd"), ("abs", "/etc/passwd")]
    ):
        archive = evil_tar(tmp_path / f"evil{i}.tar", member, link)
        dest = tmp_path / f"out{i}"
        with pytest.raises(UserError, match="unsafe member"):
            safe_extract(archive, dest)
        assert not list(dest.rglob("*"))
    assert not (tmp_path / "escaped.txt").exists()


def test_download_of_an_evil_archive_installs_nothing(tmp_path):
    archive = evil_zip(tmp_path / "evil.zip")
    md5, _ = digests(archive)
    data_dir = tmp_path / "datadir"
    with pytest.raises(UserError, match="unsafe member"):
        dataset_spec("domars16k").download(data_dir, md5=md5, url=archive.as_uri())
    assert list(data_dir.iterdir()) == []


def test_find_root_prefers_the_shallowest_match(tmp_path):
    (tmp_path / "a" / "train").mkdir(parents=True)
    (tmp_path / "a" / "test").mkdir()
    (tmp_path / "a" / "b" / "train").mkdir(parents=True)
    (tmp_path / "a" / "b" / "test").mkdir()
    assert find_root(tmp_path, ("train", "test")) == tmp_path / "a"
    assert find_root(tmp_path, ("missing",)) is None


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello")
    with pytest.raises(UserError, match="neither a zip nor a tar"):
        safe_extract(junk, tmp_path / "out")


# --- bench data ------------------------------------------------------------------------------------------------


def test_cli_download_then_verify(tmp_path, domars_zip, capsys):
    md5, _ = digests(domars_zip)
    data_dir = tmp_path / "datadir"
    assert (
        main([*"data download domars16k --data-dir".split(), str(data_dir), "--md5", md5, "--url", domars_zip.as_uri()])
        == 0
    )
    assert "checksum verified" in capsys.readouterr().err
    assert main([*"data verify domars16k --data-dir".split(), str(data_dir), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "54 images, 27 groups" in captured.out.replace("\n", " ")
    row = next(line for line in captured.out.splitlines() if "│ cra " in line)
    assert [c.strip() for c in row.split("│")[1:-1]] == [*"cra 18 9 6 6 6".split()]
    assert "all 54 images decode" in captured.err


def test_cli_download_without_checksum(tmp_path, capsys):
    line = one_line_error(capsys, ["data", "download", "hirise-v1", "--data-dir", str(tmp_path)])
    assert "--md5 HEX" in line and "1048301" in line


def test_cli_download_of_a_dataset_without_download(tmp_path, capsys):
    line = one_line_error(capsys, ["data", "download", "aid", "--data-dir", str(tmp_path)])
    assert "no scripted download" in line


def test_cli_verify_reports_a_corrupt_image(tmp_path, capsys):
    data = hirise_v1_like(tmp_path)
    victim = sorted((data / "hirise-v1" / "map-proj").iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:40])  # truncated JPEG
    line = one_line_error(capsys, [*"data verify hirise-v1 --data-dir".split(), str(data), "--quiet"])
    assert str(victim) in line and "corrupt or truncated" in line


def test_cli_verify_counts(tmp_path, capsys):
    data = hirise_v1_like(tmp_path)
    assert main([*"data verify hirise-v1 --data-dir".split(), str(data), "--quiet"]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in out.splitlines()
        if line.startswith("│")
    }
    assert rows == {
        "other": ["8", "4"],
        "crater": ["6", "4"],
        "dark_dune": ["6", "4"],
        "edge": ["4", "4"],
        "all": ["24", "16"],
    }


@pytest.mark.slow
def test_cli_verify_real_hirise(real_data_dir, capsys):
    assert main([*"data verify hirise-v1 --data-dir".split(), str(real_data_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "3820 images, 161 groups" in out.replace("\n", " ")


# --- user datasets: every rule refused or announced ------------------------------------------------------------


def write_csv(root, rows, header="path,label,group,split"):
    """root/labels.csv from (path, label, group, split) rows; images are generated for every path."""
    lines = [header]
    for i, row in enumerate(rows):
        if not (root / row[0]).exists():
            write_image(root / row[0], i % 5, i)
        lines.append(",".join(row[: len(header.split(","))]))
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def scenes(split_of=lambda g: "base" if g < 3 else "target", labels=("dunes", "craters")):
    return [
        (f"img/{name}_{g}_{i}.png", name, f"{name}{g}", split_of(g))
        for name in labels
        for g in range(5)
        for i in range(2)
    ]


@pytest.mark.parametrize("base,target", [("train", "test"), ("Train", "TEST"), (" base ", "Target")])
def test_csv_split_vocabularies_are_understood(tmp_path, capsys, base, target):
    from tasks.registry import load_task

    csv = write_csv(tmp_path, scenes(lambda g: base if g < 3 else target))
    task = load_task(f"csv:{csv}", tmp_path)
    assert len(task.base) == 12 and len(task.target) == 8
    assert set(task.table.groups[task.target]) == {f"{c}{g}" for c in ("dunes", "craters") for g in (3, 4)}
    err = capsys.readouterr().err
    if base.strip().lower() == "train":
        assert (
            err.strip() == f"notice: CSV dataset {csv}: split column train/val/test: base pool = train + val, "
            "target = test"
        )
    else:
        assert err == ""


def test_csv_train_val_test_gives_base_train_plus_val(tmp_path):
    from tasks.registry import load_task

    csv = write_csv(tmp_path, scenes(lambda g: ["train", "train", "val", "test", "test"][g]))
    task = load_task(f"csv:{csv}", tmp_path)
    assert set(task.table.splits[task.base]) == {"train", "val"} and set(task.table.splits[task.target]) == {"test"}


@pytest.mark.parametrize(
    "values,expected",
    [
        (
            ["base", "target", "holdout"],
            "split column holds 'base', 'holdout', 'target'; use base/target or train/val/test",
        ),
        (["base", "target", ""], "split column holds '', 'base', 'target'"),
        (["train", "target", "base"], "split column holds 'base', 'target', 'train'"),
        (["train", "val", "train"], "split column holds only 'train', 'val', no target row (test)"),
    ],
)
def test_csv_unrecognised_splits_are_refused_listing_the_values(tmp_path, capsys, values, expected):
    csv = write_csv(tmp_path, scenes(lambda g: values[min(g, len(values) - 1)]))
    line = one_line_error(
        capsys, [*"run --method protonet --task".split(), f"csv:{csv}", "--quiet", "--out", str(tmp_path / "o.csv")]
    )
    assert expected in line and f"CSV dataset {csv}" in line


def test_csv_duplicate_paths_are_refused(tmp_path, capsys):
    rows = scenes()
    rows.append(("./" + rows[0][0], rows[0][1], "another-scene", "target"))  # the same file, spelled otherwise
    csv = write_csv(tmp_path, rows)
    with pytest.raises(UserError, match=r"lines 2 and 22 list the same image .*; list each image once"):
        load_dataset(f"csv:{csv}", tmp_path)


def test_csv_labels_are_stripped_with_a_notice_and_empty_or_case_twins_refused(tmp_path, capsys):
    rows = [(p, (" " + label) if i % 2 else label, g, s) for i, (p, label, g, s) in enumerate(scenes())]
    table = load_dataset(f"csv:{write_csv(tmp_path / 'spaces', rows)}", tmp_path)
    assert table.class_names == ("craters", "dunes")  # ' craters' and 'craters' are one class
    assert len(table.notices) == 1 and "surrounding spaces stripped from 10 label(s)" in table.notices[0]
    assert capsys.readouterr().err.strip() == f"notice: {table.notices[0]}"
    rows = [(p, label.title() if i == 0 else label, g, s) for i, (p, label, g, s) in enumerate(scenes())]
    with pytest.raises(UserError, match=r"labels 'Dunes', 'dunes' differ only by case"):
        load_dataset(f"csv:{write_csv(tmp_path / 'case', rows)}", tmp_path)
    rows = [(p, " " if i == 3 else label, g, s) for i, (p, label, g, s) in enumerate(scenes())]
    with pytest.raises(UserError, match=r"line 5 has an empty label \(1 row\(s\) in all\)"):
        load_dataset(f"csv:{write_csv(tmp_path / 'empty', rows)}", tmp_path)


def test_csv_empty_groups_make_own_scenes_with_a_notice(tmp_path, capsys):
    rows = [(p, label, "" if i < 4 else g, s) for i, (p, label, g, s) in enumerate(scenes())]
    table = load_dataset(f"csv:{write_csv(tmp_path, rows)}", tmp_path)
    assert list(table.groups[:4]) == [r[0] for r in rows[:4]]  # each its own scene, named by its path
    assert len(set(table.groups[:4])) == 4
    assert table.notices == (
        f"CSV dataset {tmp_path / 'labels.csv'}: 4 row(s) have an empty group (first on "
        "line 2); each such image is its own scene",
    )


def test_csv_missing_image_error_says_paths_are_relative_to_the_csv(tmp_path, monkeypatch):
    write_csv(tmp_path / "set", scenes())
    (tmp_path / "set" / "img" / "dunes_0_0.png").unlink()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"relative paths are read relative to the CSV's folder .*/set\)"):
        load_dataset("csv:set/labels.csv", tmp_path)


def test_csv_without_group_column_names_each_scene_by_its_relative_path(tmp_path):
    csv = write_csv(tmp_path, scenes(), header="path,label")
    table = load_dataset(f"csv:{csv}", tmp_path)
    assert list(table.groups) == [r[0] for r in scenes()]


def test_folder_ignores_hidden_files_macos_debris_and_empty_classes(tmp_path, capsys):
    root = folder_like(tmp_path / "mine", per_class=6)
    write_image(root / "dunes" / ".hidden.png", 0)
    write_image(root / "dunes" / ".cache" / "thumb.png", 0)
    write_image(root / "__MACOSX" / "dunes" / "._img0.png", 0)
    write_image(root / "craters" / "__MACOSX" / "img0.png", 0)
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no images here")
    table = load_dataset(f"folder:{root}", tmp_path)
    assert table.class_names == ("craters", "dunes", "plains") and len(table) == 18
    assert not any("MACOSX" in p or "/." in p for p in table.paths)
    assert (
        capsys.readouterr().err.strip() == f"notice: folder dataset {root}: class folder 'empty' holds no images; "
        "ignored"
    )


def test_folder_class_names_equal_up_to_case_are_refused(tmp_path):
    root = folder_like(tmp_path / "mine", classes=("dunes", "Dunes", "plains"), per_class=6)
    with pytest.raises(UserError, match=r"class folders 'Dunes', 'dunes' differ only by case"):
        load_dataset(f"folder:{root}", tmp_path)


def test_aid_skips_macos_debris(tmp_path):
    data = aid_like(tmp_path)
    base = next(p for p in (data / "aid-subset").rglob("*") if p.is_dir() and any(p.glob("*.jpg")))
    write_image(base / "._resource-fork.jpg", 0)
    write_image(base.parent / "__MACOSX" / "x.jpg", 0)
    table = load_dataset("aid", data)
    assert table.class_names == ("Airport", "Beach", "Desert") and len(table) == 9
