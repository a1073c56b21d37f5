"""AID aerial scenes (Xia et al. 2017), Earth remote sensing: `AID/<Class>/<class>_<n>.jpg`.

Each image is its own scene, so the group is the image itself. Hidden files and folders and `__MACOSX`
(archive debris, e.g. `._x.jpg` resource forks) are skipped.
"""

from __future__ import annotations

from pathlib import Path

from common.errors import UserError
from tasks.datasets.base import DatasetSpec, ImageTable, register_dataset, table_from_rows
from tasks.datasets.generic import ignored

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}


def load_aid(root: Path) -> ImageTable:
    base = root / "AID" if (root / "AID").is_dir() else root
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not ignored(Path(p.name)))
    if not classes:
        raise UserError(f"no class folders in {base}; expected AID/<Class>/<image>.jpg")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(
            p for p in (base / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not ignored(Path(p.name))
        )
        paths += files
        labels += [label] * len(files)
    groups = [f"{p.parent.name}/{p.stem}" for p in paths]
    return table_from_rows("aid", paths, labels, groups, classes)


AID = register_dataset(
    DatasetSpec(
        name="aid",
        folder="aid-subset",
        description="AID aerial scenes (Earth): 30 classes, 150x150 RGB subset",
        load=load_aid,
        how_to_get=(
            "AID is distributed by Wuhan University for research use and has no scripted download; place "
            "AID/<Class>/<image>.jpg under the data directory in a folder named aid-subset"
        ),
        source="https://captain-whu.github.io/AID/",
    )
)
