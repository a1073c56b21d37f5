"""Dataset loaders on generated fakes in the official layouts, the downloader (checksums, safe unpacking), and
`bench data download / verify`."""
import hashlib
import os

import numpy as np
import pytest

from benchmark.cli import main
from fakes import (DOMARS_CODES, aid_like, csv_like, domars16k_like, evil_tar, evil_zip, folder_like, hirise_v1_like,
                   tar_folder, write_image, zip_folder)
from tasks.datasets import dataset_spec, load_dataset
from tasks.datasets.download import find_root, safe_extract
from tasks.errors import UserError


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
    assert {s: int((table.splits == s).sum()) for s in ("train", "val", "test")} == {"train": 18, "val": 18,
                                                                                        "test": 18}
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
    for i, (member, link) in enumerate([("../escaped.txt", None), ("link", "../../etc/passwd"),
                                        ("abs", "/etc/passwd")]):
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
    assert main(["data", "download", "domars16k", "--data-dir", str(data_dir), "--md5", md5,
                 "--url", domars_zip.as_uri()]) == 0
    assert "checksum verified" in capsys.readouterr().err
    assert main(["data", "verify", "domars16k", "--data-dir", str(data_dir), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "54 images, 27 groups" in captured.out.replace("\n", " ")
    row = next(line for line in captured.out.splitlines() if "│ cra " in line)
    assert [c.strip() for c in row.split("│")[1:-1]] == ["cra", "18", "9", "6", "6", "6"]
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
    line = one_line_error(capsys, ["data", "verify", "hirise-v1", "--data-dir", str(data), "--quiet"])
    assert str(victim) in line and "corrupt or truncated" in line


def test_cli_verify_counts(tmp_path, capsys):
    data = hirise_v1_like(tmp_path)
    assert main(["data", "verify", "hirise-v1", "--data-dir", str(data), "--quiet"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in out.splitlines() if line.startswith("│")}
    assert rows == {"other": ["8", "4"], "crater": ["6", "4"], "dark_dune": ["6", "4"], "edge": ["4", "4"],
                    "all": ["24", "16"]}


@pytest.mark.slow
def test_cli_verify_real_hirise(real_data_dir, capsys):
    assert main(["data", "verify", "hirise-v1", "--data-dir", str(real_data_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "3820 images, 161 groups" in out.replace("\n", " ")
