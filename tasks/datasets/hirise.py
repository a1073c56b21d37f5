"""HiRISE orbital image labelled data set v1 (Wagstaff et al. 2018, Zenodo record 1048301).

227x227 greyscale landmark crops; `labels-map-proj.txt` holds `<file> <class id>`. The group is the HiRISE
observation id: the file name before `_RED`, with a leading `thresh-1-` stripped (thresholded variants of a
crop come from the same observation).
"""

from __future__ import annotations

from pathlib import Path

from common.errors import UserError
from tasks.datasets.base import DatasetSpec, ImageTable, register_dataset, table_from_rows
from tasks.datasets.download import ZenodoArchive, archive_downloader

# Label ids as the dataset defines them. Id 5 (impact ejecta) is defined but has no image in v1, so the
# dense labels the suite uses skip it; a label id outside this map is an error.
HIRISE_V1_CLASSES = {
    0: "other",
    1: "crater",
    2: "dark_dune",
    3: "slope_streak",
    4: "bright_dune",
    5: "impact_ejecta",
    6: "edge",
}
LABEL_FILE = "labels-map-proj.txt"
IMAGE_DIR = "map-proj"


def observation_id(file_name: str) -> str:
    stem = file_name.removeprefix("thresh-1-")
    return stem.split("_RED")[0]


def read_label_file(path: Path) -> list[tuple[str, int]]:
    if not path.is_file():
        raise UserError(f"label file {path} is missing; re-download the dataset (bench data download hirise-v1)")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise UserError(f"{path}:{number}: expected '<file> <class id>', got {line.strip()!r}")
        label = int(parts[1])
        if label not in HIRISE_V1_CLASSES:
            raise UserError(
                f"{path}:{number}: label id {label} is not defined by the dataset "
                f"(known ids: {', '.join(map(str, HIRISE_V1_CLASSES))})"
            )
        rows.append((parts[0], label))
    if not rows:
        raise UserError(f"label file {path} is empty; re-download the dataset")
    return rows


def load_hirise_v1(root: Path) -> ImageTable:
    rows = read_label_file(root / LABEL_FILE)
    present = sorted({label for _, label in rows})
    dense = {label: i for i, label in enumerate(present)}
    paths, labels, groups = [], [], []
    for name, label in rows:
        path = root / IMAGE_DIR / name
        if not path.is_file():
            raise UserError(f"image {path} listed in {root / LABEL_FILE} does not exist; re-download the dataset")
        paths.append(path)
        labels.append(dense[label])
        groups.append(observation_id(name))
    return table_from_rows(
        "hirise-v1", paths, labels, groups, [HIRISE_V1_CLASSES[c] for c in present], scenes="hirise-observation"
    )


HIRISE_V1 = register_dataset(
    DatasetSpec(
        name="hirise-v1",
        folder="hirise-v1",
        description="HiRISE landmark crops v1: 3,820 227x227 greyscale crops, 6 classes, 161 observations",
        load=load_hirise_v1,
        how_to_get="get it with `bench data download hirise-v1 --md5 HEX` (Zenodo record 1048301)",
        source="https://zenodo.org/record/1048301",
        # No checksum of hirise-map-proj.zip was available here: the download asks for --md5/--sha256.
        download=archive_downloader(
            "hirise-v1",
            "hirise-v1",
            ZenodoArchive(record="1048301", file_name="hirise-map-proj.zip", root_marker=(LABEL_FILE, IMAGE_DIR)),
        ),
    )
)
