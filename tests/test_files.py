"""Outputs written at once: a writer that fails leaves the old file (or none) and no partial file beside it."""

import numpy as np
import pytest

from common.files import atomic_output, atomic_write_text


def test_a_failed_write_leaves_the_old_output_and_no_partial_file(tmp_path):
    target = tmp_path / "out" / "labels.npy"
    with atomic_output(target) as tmp:
        assert tmp.suffix == ".npy" and tmp.parent == target.parent  # writers pick the format by the suffix
        np.save(tmp, np.arange(3))
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            np.save(tmp, np.arange(5))
            raise RuntimeError("killed half way")
    assert np.load(target).tolist() == [0, 1, 2]
    assert sorted(p.name for p in target.parent.iterdir()) == ["labels.npy"]


def test_atomic_text_replaces_the_whole_file(tmp_path):
    path = tmp_path / "table.md"
    atomic_write_text(path, "a much longer first version\n")
    atomic_write_text(path, "short\n")
    assert path.read_text() == "short\n" and [p.name for p in tmp_path.iterdir()] == ["table.md"]


def test_a_rewritten_file_keeps_its_permissions_and_a_new_one_gets_the_umask(tmp_path):
    import os

    old = tmp_path / "kept.csv"
    old.write_text("a\n")
    old.chmod(0o640)
    atomic_write_text(old, "b\n")
    assert old.stat().st_mode & 0o777 == 0o640
    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.csv", "c\n")
    finally:
        os.umask(umask)
    assert (tmp_path / "new.csv").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_fsync_tree_syncs_every_file_and_folder(tmp_path, monkeypatch):
    import os

    from common.files import fsync_tree

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one.png").write_bytes(b"1")
    (tmp_path / "a" / "b" / "two.png").write_bytes(b"2")
    synced, real_fsync, real_open = [], os.fsync, os.open
    names = {}

    def opening(path, flags, *args):
        fd = real_open(path, flags, *args)
        names[fd] = os.path.relpath(path, tmp_path)
        return fd

    monkeypatch.setattr(os, "open", opening)
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(names[fd]), real_fsync(fd)))
    fsync_tree(tmp_path / "a")
    assert set(synced) == {"a", "a/b", "a/one.png", "a/b/two.png"}
    assert synced.index("a/b") < synced.index("a")  # deepest folder first, after every file
    assert all(synced.index(f) < synced.index("a/b") for f in ("a/one.png", "a/b/two.png"))
