"""An image dataset is a table of (path, label, group, split) plus its class names.

The group is the source scene (a HiRISE observation, a CTX product, or the image itself): crops of one
group never sit on both sides of a split or of an episode.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import UserError
from common.registry import Registry
from tasks.datasets.content import file_digests

COLUMNS = ("path", "label", "group", "split")
FINGERPRINT_VERSION = 2  # bump when what a fingerprint hashes changes (content, not paths or file times)


@dataclass(frozen=True, eq=False)
class ImageTable:
    """Rows: one image each. `label` is a dense int in 0..len(class_names)-1."""

    name: str
    frame: pd.DataFrame
    class_names: tuple[str, ...]
    notices: tuple[str, ...] = ()  # one line each: rules applied while reading the dataset (already printed)
    scenes: str = ""  # what the groups name (tasks/datasets/scenes.py): '' when each group is only an image
    # a table joined from others (a task's and its source's), fingerprinted by theirs: their images may lie in
    # folders far apart (a data folder, the cache's derived windows), whose paths must not enter its identity
    parts: tuple[ImageTable, ...] = ()

    def __post_init__(self):
        missing = [c for c in COLUMNS if c not in self.frame.columns]
        if missing:
            raise ValueError(f"ImageTable {self.name}: missing columns {missing}")

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def paths(self) -> np.ndarray:
        return self.frame["path"].to_numpy(dtype=object)

    @property
    def labels(self) -> np.ndarray:
        return self.frame["label"].to_numpy(dtype=np.int64)

    @property
    def groups(self) -> np.ndarray:
        return self.frame["group"].to_numpy(dtype=object)

    @property
    def splits(self) -> np.ndarray:
        return self.frame["split"].to_numpy(dtype=object)

    def identity(self) -> str:
        """Hash of what the rows are, wherever the dataset lies and whenever its files were written: each image's
        path relative to the folder holding them all, its label, group and split, and the class names. Episode
        streams are named by it, so the same dataset on two machines gives the same manifests and their results
        merge; caches key on `fingerprint`, which also sees what the files hold."""
        h = hashlib.sha256()
        h.update(self.name.encode())
        h.update("\x00".join(self.class_names).encode())
        for path, label, group, split in zip(relative_paths(self.paths), self.labels, self.groups, self.splits):
            h.update(f"{path}\x00{label}\x00{group}\x00{split}\n".encode())
        return h.hexdigest()[:16]

    def content_digests(self, cache_dir: Path | str | None = None) -> list[str]:
        """SHA-256 of each image file's bytes, in row order (cached by path, size and time; see content.py)."""
        try:
            return file_digests(self.paths, cache_dir)
        except FileNotFoundError as exc:
            raise UserError(
                f"image {exc.filename} of dataset {self.name} no longer exists; check the dataset folder"
            ) from None
        except OSError as exc:
            raise UserError(f"image {exc.filename} of dataset {self.name} cannot be read ({exc.strerror})") from None

    def fingerprint(self, cache_dir: Path | str | None = None) -> str:
        """Keys caches (and results, as the data's identity): what the images are and what they hold, wherever
        they lie and however their folder was spelled. Hashes the class names and, per row, the path relative
        to the folder holding all images, label, group, split and the SHA-256 of the file's bytes; not the
        table's name (a `folder:` name holds the folder's location) nor file times. A joined table hashes its
        parts' fingerprints and, per row, its label and digest instead of paths."""
        if self.parts:
            return self._joined_fingerprint(cache_dir)
        h = hashlib.sha256(f"table-content-v{FINGERPRINT_VERSION}".encode())
        h.update("\x00".join(self.class_names).encode())
        rows = zip(relative_paths(self.paths), self.labels, self.groups, self.splits, self.content_digests(cache_dir))
        for path, label, group, split, digest in rows:
            h.update(f"{path}\x00{label}\x00{group}\x00{split}\x00{digest}\n".encode())
        return h.hexdigest()[:16]

    def _joined_fingerprint(self, cache_dir=None) -> str:
        # the parts' fingerprints hold their classes, groups and splits; the rows say which images were taken
        # and their labels (class and group names here are prefixed with the source's spec: a folder's path)
        h = hashlib.sha256(f"table-joined-v{FINGERPRINT_VERSION}".encode())
        for part in self.parts:
            h.update(f"{part.fingerprint(cache_dir)}\n".encode())
        for label, digest in zip(self.labels, self.content_digests(cache_dir)):
            h.update(f"{label}\x00{digest}\n".encode())
        return h.hexdigest()[:16]


def relative_paths(paths) -> list[str]:
    """Paths relative to their common folder, with forward slashes (as given where they share none)."""
    paths = [str(p) for p in paths]
    try:
        root = os.path.commonpath(paths) if paths else ""
    except ValueError:  # absolute and relative paths mixed, or different drives
        return paths
    if len(paths) == 1:
        root = os.path.dirname(root)
    return [Path(os.path.relpath(p, root or ".")).as_posix() for p in paths]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: how to load it from a data directory and where it officially comes from."""

    name: str
    folder: str  # sub-folder of the data directory
    description: str
    load: Callable[[Path], ImageTable]
    how_to_get: str
    download: Callable[[Path], Path] | None = None
    source: str = ""


def _import_builtins() -> None:
    import tasks.datasets  # noqa: F401  (registers the built-in datasets)


DATASETS = Registry(
    "dataset",
    "marsfsl.datasets",
    builtins=_import_builtins,
    hint=lambda reg: f"known: {', '.join(reg.names())}, or folder:PATH, csv:PATH",
)


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    return DATASETS.register(spec.name, spec)


def dataset_names() -> list[str]:
    return DATASETS.names()


def dataset_spec(name: str) -> DatasetSpec:
    return DATASETS.lookup(name)


def dataset_root(spec: DatasetSpec, data_dir: Path) -> Path:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(
            f"data directory {data_dir} does not exist; pass --data-dir or set BENCH_DATA_DIR to the folder "
            "that holds the datasets"
        )
    root = data_dir / spec.folder
    if not root.is_dir():
        raise UserError(f"dataset {spec.name} not found: looked in {root}; {spec.how_to_get}")
    return root


def table_from_rows(
    name: str, paths, labels, groups, class_names, splits=None, notices=(), scenes: str = ""
) -> ImageTable:
    frame = pd.DataFrame(
        {
            "path": [str(p) for p in paths],
            "label": np.asarray(labels, dtype=np.int64),
            "group": [str(g) for g in groups],
            "split": [str(s) for s in splits] if splits is not None else [""] * len(paths),
        }
    )
    return ImageTable(name=name, frame=frame, class_names=tuple(class_names), notices=tuple(notices), scenes=scenes)
