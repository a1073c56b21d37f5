"""A dataset's cache identity is its content, not its location: file digests (cached by stat), one task name
per folder however it is spelled, and cache keys (SDFT's step 1 included) shared by every path to the data."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from fakes import folder_like, write_image

from methods.base import Context
from methods.cache import Cache
from methods.registry import create_method
from tasks.datasets import content
from tasks.datasets.content import file_digests
from tasks.registry import load_task

FAST = dict(epochs=1, batch_size=8, steps=5)


@pytest.fixture
def fresh_memory(monkeypatch):
    """Each test sees the digest cache on disk only, as a new process would."""
    monkeypatch.setattr(content, "_MEMORY", {})


def count_hashing(monkeypatch) -> list:
    hashed = []
    real = content.file_sha256

    def counting(path):
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(content, "file_sha256", counting)
    return hashed


def test_file_digests_hash_the_bytes_and_a_warm_call_only_stats(tmp_path, monkeypatch, fresh_memory):
    files = [write_image(tmp_path / "imgs" / f"{i}.png", i) for i in range(4)]
    cache_dir = tmp_path / "digests"
    hashed = count_hashing(monkeypatch)
    digests = file_digests(files, cache_dir)
    assert digests == [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    assert len(hashed) == 4
    stored = list(cache_dir.iterdir())
    assert len(stored) == 1 and stored[0].suffix == ".json" and json.loads(stored[0].read_text())["files"]
    monkeypatch.setattr(content, "_MEMORY", {})  # a new process: only the disk cache is left
    assert file_digests(files, cache_dir) == digests and len(hashed) == 4  # warm: nothing hashed again
    write_image(files[2], label=7, group=3)  # new pixels under the same name
    again = file_digests(files, cache_dir)
    assert again[2] == hashlib.sha256(files[2].read_bytes()).hexdigest() != digests[2]
    assert again[:2] == digests[:2] and len(hashed) == 5
    assert not [p for p in cache_dir.iterdir() if p.name.endswith(".tmp")]


def test_digests_are_computed_when_the_cache_folder_is_unusable(tmp_path, monkeypatch, fresh_memory):
    files = [write_image(tmp_path / "imgs" / f"{i}.png", i) for i in range(2)]
    expected = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert file_digests(files, blocker / "digests") == expected  # cannot be created
    damaged = tmp_path / "damaged"
    monkeypatch.setattr(content, "_MEMORY", {})
    file_digests(files, damaged)
    for stored in damaged.iterdir():
        stored.write_text("{not json")
    monkeypatch.setattr(content, "_MEMORY", {})
    assert file_digests(files, damaged) == expected  # a damaged cache file is recomputed and rewritten
    monkeypatch.setattr(content, "_MEMORY", {})
    hashed = count_hashing(monkeypatch)
    assert file_digests(files, damaged) == expected and hashed == []


def spellings(tmp_path: Path, monkeypatch) -> list[str]:
    data = folder_like(tmp_path / "fx" / "good", per_class=6)
    (tmp_path / "link").symlink_to(data, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return [
        "folder:fx/good",
        "folder:./fx/good",
        f"folder:{data}",
        "folder:fx/good/",
        f"folder:{tmp_path}/link",
        "folder:fx/../fx/good",
    ]


def context(task, cache):
    return Context(task, cache, image_size=32, seed=0)


def test_every_spelling_of_a_folder_is_one_task_with_one_set_of_cache_keys(tmp_path, monkeypatch):
    names = spellings(tmp_path, monkeypatch)
    tasks = [load_task(name, tmp_path) for name in names]
    canonical = f"folder:{os.path.realpath(tmp_path / 'fx' / 'good')}"
    assert {t.name for t in tasks} == {canonical}  # one name: manifests and results resume and merge
    assert len({t.identity() for t in tasks}) == 1
    assert len({t.fingerprint() for t in tasks}) == 1
    cache = Cache(tmp_path / "cache")
    sdft = create_method("sdft", **FAST)
    assert len({context(t, cache).images_key() for t in tasks}) == 1
    assert len({context(t, cache).features_key() for t in tasks}) == 1
    assert len({sdft.step1_key(context(t, cache)) for t in tasks}) == 1


def test_the_same_data_elsewhere_shares_caches_and_new_pixels_do_not(tmp_path):
    """Another machine (a copy at another path, with new file times) hits the same cache entries, SDFT's step
    1 included; the same names with other pixels do not."""
    here = folder_like(tmp_path / "here" / "mine", per_class=6)
    there = tmp_path / "there" / "theirs"
    shutil.copytree(here, there)
    for image in there.rglob("*.png"):
        os.utime(image, ns=(1, 1))
    one, two = load_task(f"folder:{here}", tmp_path), load_task(f"folder:{there}", tmp_path)
    assert one.name != two.name  # the name says where the data is ...
    cache = Cache(tmp_path / "cache")
    sdft = create_method("sdft", **FAST)
    assert one.fingerprint() == two.fingerprint()  # ... the cache keys do not
    assert sdft.step1_key(context(one, cache)) == sdft.step1_key(context(two, cache))
    assert context(one, cache).images_key() == context(two, cache).images_key()
    write_image(next(there.rglob("img0.png")), label=9, group=9)
    repainted = load_task(f"folder:{there}", tmp_path)
    assert repainted.fingerprint() != one.fingerprint()
    assert sdft.step1_key(context(repainted, cache)) != sdft.step1_key(context(one, cache))
    assert context(repainted, cache).images_key() != context(one, cache).images_key()


def test_one_decoded_array_serves_every_spelling(tmp_path, monkeypatch):
    """The cache entry itself is shared: decoding through a second spelling is a hit, not a recomputation."""
    from methods.features import image_array

    names = spellings(tmp_path, monkeypatch)
    cache = Cache(tmp_path / "cache")
    first = image_array(load_task(names[0], tmp_path).table, 16, cache)
    for name in names[1:]:
        again = image_array(load_task(name, tmp_path).table, 16, cache)
        assert (again == first).all()
    assert len(cache.misses) == 1 and len(cache.hits) == len(names) - 1


def test_digests_of_a_run_live_in_its_cache_folder(tmp_path, fresh_memory):
    from benchmark.session import session
    from common.settings import Settings

    with session(Settings(cache_dir=tmp_path / "cache"), thread_policy=False):
        task = load_task(f"folder:{folder_like(tmp_path / 'mine', per_class=6)}", tmp_path)
        task.fingerprint()
    assert list((tmp_path / "cache" / "digests").glob("*.json"))


def test_shipped_manifests_keep_their_names(real_data_dir):
    """Episode streams (and the shipped manifests named by them) do not change with the content identity."""
    from benchmark.runner import stream_id

    shipped = Path(__file__).resolve().parents[1] / "results" / "manifests"
    for task_name, shots in (("hirise-regions", 5), ("aid-classes", 1)):
        if task_name == "aid-classes" and not (real_data_dir / "aid-subset").is_dir():
            continue
        episodes = load_task(task_name, real_data_dir).episodes(5, shots, 15, 1, seed=0)
        assert (shipped / f"{task_name}-5w{shots}s15q-seed0-{stream_id(episodes)}.npz").is_file()


def test_bench_run_resumes_across_spellings_of_one_folder(tmp_path, monkeypatch, capsys):
    from fakes_reliability import make_folder_dataset

    from benchmark.cli import main

    make_folder_dataset(tmp_path / "fx" / "good")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.csv"

    def run(spelling):
        return main(
            [
                *"run --method simpleshot --task".split(),
                spelling,
                *"--shots 1 --ways 3 --queries 2 --episodes 3 --image-size 32 --quiet --data-dir".split(),
                str(tmp_path),
                "--cache-dir",
                str(tmp_path / "cache"),
                "--out",
                str(out),
            ]
        )

    assert run("folder:fx/good") == 0
    rows = out.read_text()
    capsys.readouterr()
    for spelling in ("folder:./fx/good/", f"folder:{tmp_path}/fx/good"):
        assert run(spelling) == 0
        assert "3 episodes already in" in capsys.readouterr().err
    assert out.read_text() == rows  # nothing recomputed, nothing added
    assert len(list((tmp_path / "manifests").iterdir())) == 1
