"""DoMars16k (Wilhelm et al. 2020, Zenodo record 4291940): 16,150 200x200 CTX tiles of 15 Martian landforms.

Official layout, as the Zenodo archive `data.zip` unpacks: `data/{train,val,test}/<code>/<ctx product id>_CX<x>_CY<y>.jpg`.
The loader accepts the split folders directly under the dataset folder or one level down (`data/`, or any
single top folder the archive brought). The label is the class folder's code, the split the split folder,
and the group is the CTX product id (the file name before `_CX`): tiles of one CTX image are one scene.
"""

from __future__ import annotations

import re
from pathlib import Path

from common.errors import UserError
from tasks.datasets.base import DatasetSpec, ImageTable, register_dataset, table_from_rows
from tasks.datasets.download import ZenodoArchive, archive_downloader

# Class codes (the folder names) and their names in the DoMars16k paper, grouped as the paper groups them.
CLASSES = {
    "ael": "aeolian curved",
    "aec": "aeolian straight",  # aeolian bedforms
    "cli": "cliff",
    "rid": "ridge",
    "fsf": "channel",
    "sfe": "mounds",  # topographic landforms
    "fsg": "gullies",
    "fse": "slope streaks",
    "fss": "mass wasting",  # slope feature landforms
    "cra": "crater",
    "sfx": "crater field",  # impact landforms
    "mix": "mixed terrain",
    "rou": "rough terrain",
    "smo": "smooth terrain",
    "tex": "textured terrain",  # terrain
}
CODES = tuple(sorted(CLASSES))
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
FILE_NAME = re.compile(r"^(?P<product>.+?)_CX(?P<x>\d+)_CY(?P<y>\d+)$")


def ctx_product_id(path: Path) -> str:
    match = FILE_NAME.match(path.stem)
    if not match:
        raise UserError(
            f"DoMars16k file {path} is not named <CTX product id>_CX<x>_CY<y>.jpg; remove it or re-download the dataset"
        )
    return match.group("product")


def find_split_root(root: Path) -> Path:
    """The folder holding train/val/test: root itself, or one level down (the archive's top folder)."""

    def has_splits(folder: Path) -> bool:
        return any((folder / s).is_dir() for s in SPLITS)

    if has_splits(root):
        return root
    candidates = sorted(p for p in root.iterdir() if p.is_dir() and has_splits(p))
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise UserError(
            f"DoMars16k: several folders in {root} hold train/val/test "
            f"({', '.join(p.name for p in candidates)}); keep one"
        )
    raise UserError(
        f"DoMars16k: no train/val/test folders in {root} or one level below; "
        "re-download it with `bench data download domars16k`"
    )


def load_domars16k(root: Path) -> ImageTable:
    base = find_split_root(root)
    paths, labels, groups, splits = [], [], [], []
    for split in SPLITS:
        split_dir = base / split
        if not split_dir.is_dir():
            continue
        for class_dir in sorted(p for p in split_dir.iterdir() if not p.name.startswith(".")):
            if not class_dir.is_dir():
                raise UserError(f"DoMars16k: unexpected file {class_dir}; expected class folders in {split_dir}")
            if class_dir.name not in CLASSES:
                raise UserError(
                    f"DoMars16k: unknown class code {class_dir.name!r} in {class_dir}; known codes: {' '.join(CODES)}"
                )
            for path in sorted(class_dir.iterdir()):
                if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                groups.append(ctx_product_id(path))
                paths.append(path)
                labels.append(CODES.index(class_dir.name))
                splits.append(split)
    if not paths:
        raise UserError(f"DoMars16k: no images under {base}/{{train,val,test}}/<class code>/")
    present = sorted(set(labels))
    dense = {label: i for i, label in enumerate(present)}
    return table_from_rows(
        "domars16k",
        paths,
        [dense[label] for label in labels],
        groups,
        [CODES[label] for label in present],
        splits,
        scenes="ctx-product",
    )


ARCHIVE = ZenodoArchive(
    record="4291940",
    file_name="data.zip",
    # Zenodo publishes an md5 for every file; it was not available where this was written, so none is
    # recorded here and the download asks for one (--md5 / --sha256) rather than trusting an unchecked file.
    md5=None,
    sha256=None,
    root_marker=("train", "test"),
)

DOMARS16K = register_dataset(
    DatasetSpec(
        name="domars16k",
        folder="domars16k",
        description="DoMars16k CTX landforms: 16,150 200x200 tiles, 15 classes, train/val/test, group = CTX product",
        load=load_domars16k,
        how_to_get="get it with `bench data download domars16k --md5 HEX` (Zenodo record 4291940, data.zip)",
        download=archive_downloader("domars16k", "domars16k", ARCHIVE),
        source="https://zenodo.org/records/4291940",
    )
)
