"""`marsbench:PATH`: a classification set in Mars-Bench's layout (kerner-lab/MarsBench), e.g. DoMars16k,
HiRISE landmarks v3.2 or MSL surface images as Mars-Bench ships them.

The layout, as Mars-Bench's classification loaders read it (`marsbench/data/classification/*.py`,
`configs/data/classification/*.yaml`):
- `PATH/annotation.csv` with columns `file_id` (the file name), `feature_name` (the class folder), `label`
  (the integer class id) and `split` (`train`, `val` or `test`);
- each image at `PATH/data/<split>/<feature_name>/<file_id>`;
- optionally `PATH/few_shot/<K>_shot.csv`, the same columns: Mars-Bench's K-shot run reads *all* its splits
  from that file instead of annotation.csv, its `train` rows being the K images per class. Such a list must hold
  exactly K distinct training images of every class, or all of a smaller class (named as capped): otherwise it
  is refused (check_k_shot_list).

Groups (source scenes), read from the file id, first rule that matches every file of the set:
- `<CTX product id>_CX<x>_CY<y>.<ext>` (DoMars16k): the CTX product id;
- `<ESP|PSP|...>_<orbit>_<lat>...` (HiRISE landmarks): the HiRISE observation id (`ESP_011623_2100`), so
  the augmented copies Mars-Bench's landmark set holds of one crop stay in one group;
- `<sol:4 digits><camera: ML|MR|MH|...>...` (MSL surface images): the sol, since one sol's images show one
  place;
- otherwise every image is its own group and `scene_notice` says so in one line: such a set gives no scene
  information, so support and query can come from one scene.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from common.errors import UserError, notice
from tasks.datasets.base import ImageTable, table_from_rows

ANNOTATION = "annotation.csv"
FEW_SHOT_DIR = "few_shot"
COLUMNS = ("file_id", "feature_name", "label", "split")
SPLITS = ("train", "val", "test")

# name -> (pattern on the file id, what the group is); tried in order, the first that fits every file wins
GROUP_RULES = (
    ("ctx-product", re.compile(r"^(?P<g>.+?)_CX\d+_CY\d+(?:\.\w+)?$"), "CTX product id"),
    ("hirise-observation", re.compile(r"^(?:thresh-1-)?(?P<g>[A-Z]{3}_\d{6}_\d{4})"), "HiRISE observation id"),
    ("msl-sol", re.compile(r"^(?P<g>\d{4})(?:ML|MR|MH|MD|NL|NR|FL|FR|RL|RR)"), "MSL sol"),
)
NO_SCENES = "image"

# Mars-Bench's folder names -> the dataset names of its published results (benchmark/reference)
PUBLISHED_NAMES = {
    "domars16k": "mb-domars16k",
    "landmark_classification": "mb-landmark_cls",
    "surface_classification": "mb-surface_cls",
}


def read_annotation(path: Path, what: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise UserError(f"Mars-Bench set: {path} does not exist; {what}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"Mars-Bench set: {path} cannot be read ({str(exc).splitlines()[0]})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(
            f"Mars-Bench set: {path} lacks column(s) {', '.join(missing)}; Mars-Bench's annotation "
            f"files have {', '.join(COLUMNS)}"
        )
    bad_split = sorted(set(frame["split"]) - set(SPLITS))
    if bad_split:
        raise UserError(
            f"Mars-Bench set: {path} has split(s) {', '.join(map(repr, bad_split[:3]))}; expected {', '.join(SPLITS)}"
        )
    integer = frame["label"].str.fullmatch(r"\d+(?:\.0*)?")  # pandas writes integer columns with NaN as 1.0
    if not integer.all():
        first = frame.loc[~integer, "label"].iloc[0]
        raise UserError(f"Mars-Bench set: {path} has a label {first!r} that is not a non-negative integer")
    return frame.assign(label=frame["label"].astype(float).astype(int).astype(str))


def group_rule(file_ids) -> tuple[str, list[str]]:
    """(rule name, group per file): the first rule of GROUP_RULES that matches every file id, else each
    image its own group (rule `image`)."""
    for name, pattern, _ in GROUP_RULES:
        matches = [pattern.match(f) for f in file_ids]
        if all(matches):
            return name, [m.group("g") for m in matches]
    return NO_SCENES, list(file_ids)


def scene_notice(name: str) -> str:
    """The line for a set whose file names give no source scene."""
    return (
        f"{name}: the file names give no source scene, so every image is its own group and support and "
        "query may come from one scene"
    )


def image_path(root: Path, split: str, feature_name: str, file_id: str) -> Path:
    return root / "data" / split / feature_name / file_id


def load_marsbench(root: Path) -> ImageTable:
    from tasks.datasets.generic import canonical

    root = canonical(root)
    if not root.is_dir():
        raise UserError(f"Mars-Bench set {root} does not exist; give the folder holding {ANNOTATION} and data/")
    frame = read_annotation(root / ANNOTATION, f"marsbench:PATH names the folder holding {ANNOTATION} and data/")
    if frame.empty:
        raise UserError(f"Mars-Bench set: {root / ANNOTATION} has no rows")
    names = {}
    for label, feature in zip(frame["label"].astype(int), frame["feature_name"]):
        if names.setdefault(label, feature) != feature:
            raise UserError(
                f"Mars-Bench set: {root / ANNOTATION} gives label {label} to two class folders "
                f"({names[label]!r} and {feature!r})"
            )
    if len(set(names.values())) != len(names):
        raise UserError(f"Mars-Bench set: {root / ANNOTATION} gives one class folder two labels")
    duplicated = frame.duplicated(["split", "feature_name", "file_id"])
    if duplicated.any():
        row = frame[duplicated].iloc[0]
        raise UserError(
            f"Mars-Bench set: {root / ANNOTATION} lists {row['split']}/{row['feature_name']}/{row['file_id']} twice"
        )
    paths = [image_path(root, s, c, f) for s, c, f in zip(frame["split"], frame["feature_name"], frame["file_id"])]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise UserError(
            f"Mars-Bench set: {len(absent)} image(s) listed in {root / ANNOTATION} do not exist, first {absent[0]}"
        )
    present = sorted(names)
    dense = {label: i for i, label in enumerate(present)}
    rule, groups = group_rule(list(frame["file_id"]))
    name = f"marsbench:{root}"
    notices = ()
    if rule == NO_SCENES:
        line = scene_notice(name)
        if line not in _NOTICED:  # once per process, not once per load (a --source loads the set again)
            _NOTICED.add(line)
            notices = (notice(line),)
    table = table_from_rows(
        name,
        paths,
        [dense[int(v)] for v in frame["label"]],
        groups,
        [names[label] for label in present],
        frame["split"],
        notices=notices,
        scenes="" if rule == NO_SCENES else rule,
    )
    object.__setattr__(table, "group_rule", rule)
    object.__setattr__(table, "marsbench_root", root)  # where fixed-K finds Mars-Bench's K-shot lists
    return table


_NOTICED: set[str] = set()


def published_name(root: Path) -> str:
    """The name under which Mars-Bench publishes results for the set in this folder ('' if none known)."""
    name = Path(root).name
    return PUBLISHED_NAMES.get(name, name if name in PUBLISHED_NAMES.values() else "")


def few_shot_file(root: Path, k: int) -> Path:
    return Path(root) / FEW_SHOT_DIR / f"{int(k)}_shot.csv"


class KShotList(NamedTuple):
    """Mars-Bench's K-shot training list of a set: table rows, and the classes with fewer than K training images
    that it takes whole ("name (n)")."""

    rows: np.ndarray
    capped: tuple[str, ...]


def few_shot_train(table: ImageTable, root: Path, k: int) -> KShotList | None:
    """Mars-Bench's own K-shot training list (the `train` rows of few_shot/<K>_shot.csv), or None when the set has
    no such file. Every listed image must be a training image of the table, and the list must mean its name
    (check_k_shot_list)."""
    path = few_shot_file(root, k)
    if not path.is_file():
        return None
    frame = read_annotation(path, "")
    train = frame[frame["split"] == "train"]
    if train.empty:
        raise UserError(f"Mars-Bench set: {path} has no train rows")
    index = {
        (s, c, f): i
        for i, (s, c, f) in enumerate(
            zip(table.splits, [Path(p).parent.name for p in table.paths], [Path(p).name for p in table.paths])
        )
    }
    rows = []
    for c, f in zip(train["feature_name"], train["file_id"]):
        if ("train", c, f) not in index:
            raise UserError(
                f"Mars-Bench set: {path} lists train/{c}/{f}, which is not a training image in "
                f"{Path(root) / ANNOTATION}"
            )
        rows.append(index[("train", c, f)])
    rows = np.asarray(rows, dtype=np.int64)
    return KShotList(rows, check_k_shot_list(table, path, int(k), rows))


def check_k_shot_list(table: ImageTable, path: Path, k: int, rows: np.ndarray) -> tuple[str, ...]:
    """A K-shot list holds K distinct training images of every class, or all of a class that has fewer (returned
    as capped, "name (n)"); anything else is a one-line UserError naming each class and its count. Distinct by
    content: two files with the same bytes are one image."""
    digests = table.content_digests()
    seen: dict[str, int] = {}
    for r in rows:
        if digests[r] in seen:
            first = seen[digests[r]]
            same = "twice" if first == r else f"and {short(table, r)}, which hold the same bytes (one image)"
            raise UserError(
                f"Mars-Bench set: {path} lists {short(table, first)} {same}; a {k}-shot list holds {k} "
                "distinct training images of every class"
            )
        seen[digests[r]] = r
    train = np.flatnonzero(table.splits == "train")
    have = {c: len({digests[i] for i in train if table.labels[i] == c}) for c in np.unique(table.labels[train])}
    listed = {c: int((table.labels[rows] == c).sum()) for c in have}
    wrong = [c for c in have if listed[c] != min(k, have[c])]
    if wrong:
        counts = ", ".join(
            f"{listed[c]} of {table.class_names[c]}" + (f" (which has {have[c]})" if have[c] < k else "") for c in wrong
        )
        raise UserError(
            f"Mars-Bench set: {path} is not a {k}-shot list: it holds {counts}; a {k}-shot list holds "
            f"exactly {k} distinct training images of every class (all of a class with fewer)"
        )
    return tuple(f"{table.class_names[c]} ({have[c]})" for c in have if have[c] < k)


def short(table: ImageTable, row: int) -> str:
    """split/class/file of a table row, as a Mars-Bench list names it."""
    p = Path(table.paths[row])
    return f"{table.splits[row]}/{p.parent.name}/{p.name}"


def _register() -> None:
    from tasks.datasets import generic

    generic.PREFIX_LOADERS.setdefault("marsbench", load_marsbench)


_register()
