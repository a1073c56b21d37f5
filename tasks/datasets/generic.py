"""A user's own labelled images without code: `folder:PATH` (one sub-folder per class) or `csv:PATH`.

Every rule applied to a user's dataset is either a refusal (a one-line UserError) or a one-line notice on
stderr (kept in `ImageTable.notices`); nothing is reinterpreted silently.

Names. `folder:fx/good`, `folder:./fx/good/`, `folder:/abs/fx/good` and a symlink to it are one dataset: the
name is always `folder:` (or `csv:`) followed by the absolute path with symbolic links resolved and no
trailing `/`. Results and manifests are named by it, so every spelling resumes and merges with the others;
caches key on the content fingerprint, which does not depend on the path at all.

Folder datasets (`PATH/<class>/<image>`): images are found by suffix (tasks.imageio.IMAGE_SUFFIXES) in each
class folder and its sub-folders; hidden files and folders (names starting with `.`) and `__MACOSX` folders
(macOS archive debris) are ignored. A class folder without images is ignored with a notice. Each image is
its own group (scene), named by its path relative to PATH.

CSV datasets (columns `path,label` and optionally `group,split`):
- paths are relative to the CSV's folder (or absolute); a missing file is refused, naming the first one and
  that folder. The same image listed twice (after resolving `./`, `..` and symlinks) is refused: it would land
  in the support and the query of one episode, or in both pools. Files with the same bytes under other names
  are one image too (tasks/datasets/copies.py, for every reader): one scene, or refused across classes or
  across the test split.
- labels: surrounding spaces are stripped (notice); an empty label is refused; two labels equal up to case
  (`Crater`, `crater`), Unicode form or spacing are refused, since they are either one class spelled twice or
  two classes no reader can tell apart; so is a label (or class folder) holding a character that does not
  show, such as a zero-width space (tasks/labels.py).
- group (the source scene): surrounding spaces are stripped (notice); an empty group cell makes that image its
  own scene, with a notice; without a group column every image is its own scene. Such a scene is named by
  the image's path relative to the CSV's folder.
- split (case-insensitive, surrounding spaces ignored): `base`/`target`, or `train`/`val`/`test` (base pool
  = train + val, target = test; notice). Any other value, an empty cell, a mix of the two vocabularies, or a
  column without a target (or a base) row is refused in one line listing the values found. Without a split
  column the task is split by scene (tasks.splits.scene_split).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from common.errors import UserError, notice
from tasks.datasets.base import ImageTable, dataset_root, dataset_spec, table_from_rows
from tasks.datasets.scenes import namespace_of
from tasks.imageio import IMAGE_SUFFIXES
from tasks.labels import check_class_names

IGNORED_FOLDERS = frozenset({"__MACOSX"})
# Split values a CSV may use, and the pool each one feeds (`bench run`'s base and target).
SPLIT_VOCABULARIES = ({"base": "base", "target": "target"}, {"train": "base", "val": "base", "test": "target"})


def split_pool(value: str) -> str:
    """'base' or 'target' for a split value a loader accepted ('' for none)."""
    for vocabulary in SPLIT_VOCABULARIES:
        if value in vocabulary:
            return vocabulary[value]
    return ""


def canonical(path: Path) -> Path:
    """The one spelling of a dataset path: absolute, symlinks resolved, no trailing slash."""
    try:
        return Path(os.path.realpath(Path(path).expanduser()))
    except ValueError as exc:  # a NUL byte in the path
        raise UserError(f"dataset path {str(path)!r} is not a valid path ({exc})") from None


def ignored(relative: Path) -> bool:
    """Hidden files and folders, and macOS archive debris, anywhere below the dataset folder."""
    return any(part.startswith(".") or part in IGNORED_FOLDERS for part in relative.parts)


def load_folder(root: Path) -> ImageTable:
    """PATH/<class>/<image>; each image is its own group (use csv: to give source scenes)."""
    root = canonical(root)
    if not root.is_dir():
        raise UserError(f"folder dataset {root} does not exist; give a folder with one sub-folder per class")
    what = f"folder dataset {root}"
    notices = []
    candidates = sorted(p.name for p in root.iterdir() if p.is_dir() and not ignored(Path(p.name)))
    classes, paths, labels = [], [], []
    for name in candidates:
        files = sorted(
            p
            for p in (root / name).rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and not ignored(p.relative_to(root)) and p.is_file()
        )
        if not files:
            notices.append(notice(f"{what}: class folder {name!r} holds no images; ignored"))
            continue
        paths += files
        labels += [len(classes)] * len(files)
        classes.append(name)
    if len(classes) < 2 or not paths:
        raise UserError(f"{what} needs at least two class sub-folders holding images")
    check_case(what, "class folders", classes)
    groups = [p.relative_to(root).as_posix() for p in paths]
    check_scenes(what, groups)
    return table_from_rows(f"folder:{root}", paths, labels, groups, classes, notices=notices)


def load_csv(path: Path) -> ImageTable:
    """Columns `path,label` and optionally `group,split`; relative paths are relative to the CSV's folder."""
    path = canonical(path)
    frame = read_csv_frame(path)
    what, notices = f"CSV dataset {path}", []
    line = {i: i + 2 for i in range(len(frame))}  # CSV line of each row (the header is line 1)
    files = csv_files(what, path, frame, line)
    check_duplicates(what, files, line)
    labels, classes = csv_labels(what, frame, line, notices)
    # an image without a group is its own scene, named by its path relative to the CSV's folder
    own = [Path(os.path.relpath(f, path.parent)).as_posix() for f in files]
    groups = csv_groups(what, frame, own, line, notices)
    scenes = namespace_of(frame["group"].str.strip()) if "group" in frame.columns else ""
    splits = None
    if "split" in frame.columns:
        splits = read_splits(what, list(frame["split"]), notices)
    else:
        check_scenes(what, groups)  # no split column: the scene split makes one
    return table_from_rows(f"csv:{path}", files, labels, groups, classes, splits, notices=notices, scenes=scenes)


def read_csv_frame(path: Path) -> pd.DataFrame:
    """The CSV's cells as text, column names stripped; refused unless it exists, parses, has path and label
    columns and a row."""
    if not path.is_file():
        raise UserError(f"CSV dataset {path} does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"CSV dataset {path} cannot be read ({str(exc).splitlines()[0]})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if missing:
        raise UserError(
            f"CSV dataset {path} lacks column(s) {', '.join(missing)}; it needs path,label and optionally group,split"
        )
    if frame.empty:
        raise UserError(f"CSV dataset {path} has no rows")
    return frame


def csv_files(what: str, path: Path, frame: pd.DataFrame, line: dict) -> list[Path]:
    """Each row's image file (a relative path is read from the CSV's folder); an empty or missing one is
    refused."""
    empty_path = [i for i, p in enumerate(frame["path"]) if not p.strip()]
    if empty_path:
        raise UserError(f"{what}: line {line[empty_path[0]]} has an empty path; give every row an image")
    files = [Path(p) if Path(p).is_absolute() else path.parent / p for p in frame["path"]]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise UserError(
            f"{what}: {len(absent)} image path(s) do not exist, first {absent[0]} (relative paths are "
            f"read relative to the CSV's folder {path.parent})"
        )
    return files


def csv_labels(what: str, frame: pd.DataFrame, line: dict, notices: list) -> tuple[list[int], list[str]]:
    """(each row's class id, the class names sorted); an empty label, or two no reader can tell apart
    (check_case), is refused."""
    names = clean_column(what, "label", list(frame["label"]), notices)
    empty = [i for i, v in enumerate(names) if not v]
    if empty:
        raise UserError(
            f"{what}: line {line[empty[0]]} has an empty label ({len(empty)} row(s) in all); give "
            "every image a class or remove the row"
        )
    classes = sorted(set(names))
    check_case(what, "labels", classes)
    return [classes.index(v) for v in names], classes


def csv_groups(what: str, frame: pd.DataFrame, own: list[str], line: dict, notices: list) -> list[str]:
    """Each row's group (scene): the group column's, stripped; `own[i]` where the cell is empty (a notice) or
    there is no group column."""
    if "group" not in frame.columns:
        return own
    groups = clean_column(what, "group", list(frame["group"]), notices)
    blank = [i for i, g in enumerate(groups) if not g]
    if blank:
        notices.append(
            notice(
                f"{what}: {len(blank)} row(s) have an empty group (first on line {line[blank[0]]}); "
                "each such image is its own scene"
            )
        )
        groups = [g or own[i] for i, g in enumerate(groups)]
    return groups


def clean_column(what: str, column: str, values: list[str], notices: list) -> list[str]:
    """Values with surrounding spaces stripped, and a notice when that changed any."""
    stripped = [v.strip() for v in values]
    changed = [v for v, s in zip(values, stripped) if v != s and s]
    if changed:
        notices.append(
            notice(
                f"{what}: surrounding spaces stripped from {len(changed)} {column}(s), e.g. "
                f"{changed[0]!r} -> {changed[0].strip()!r}"
            )
        )
    return stripped


def check_duplicates(what: str, files: list[Path], line: dict) -> None:
    seen: dict[str, int] = {}
    for i, f in enumerate(files):
        key = os.path.realpath(f)
        if key in seen:
            raise UserError(
                f"{what}: lines {line[seen[key]]} and {line[i]} list the same image {f}; list each "
                "image once (twice, it could be both a support and a query image of one episode)"
            )
        seen[key] = i


def check_case(what: str, kind: str, names) -> None:
    """Refuse class names equal up to case (or Unicode form, or spacing), and names holding a character that
    does not show: one class spelled two ways, or two classes nobody can tell apart (tasks/labels.py)."""
    check_class_names(what, kind, names)


def read_splits(what: str, values: list[str], notices: list) -> list[str]:
    """Split values lower-cased and stripped, refused unless they are base/target or train/val/test."""
    splits = [v.strip().lower() for v in values]
    found = set(splits)
    listed = ", ".join(repr(v) for v in sorted(set(values), key=str)[:8])
    hint = "use base/target or train/val/test (case-insensitive), or drop the column for a scene split"
    vocabulary = next((v for v in SPLIT_VOCABULARIES if found <= set(v)), None)
    if vocabulary is None:
        raise UserError(f"{what}: split column holds {listed}; {hint}")
    pools = {vocabulary[v] for v in found}
    if pools != {"base", "target"}:
        lacking = "target" if "target" not in pools else "base"
        raise UserError(
            f"{what}: split column holds only {listed}, no {lacking} row "
            f"({'/'.join(v for v, p in vocabulary.items() if p == lacking)}); {hint}"
        )
    if "train" in vocabulary:
        notices.append(notice(f"{what}: split column train/val/test: base pool = train + val, target = test"))
    return splits


def check_scenes(what: str, groups) -> None:
    """The scene-disjoint base/target split deals whole scenes (groups) into folds: it needs one per fold."""
    import inspect

    from tasks.splits import scene_split

    folds = inspect.signature(scene_split).parameters["n_folds"].default
    n = len(set(map(str, groups)))
    if n < folds:
        raise UserError(
            f"{what} has {n} scene(s) (groups; each image is its own without a group column), too few "
            f"for the scene-disjoint base/target split, which needs {folds}; add images, or give a CSV "
            "with a split column (base/target or train/val/test)"
        )


PREFIX_LOADERS = {"folder": load_folder, "csv": load_csv}


def load_dataset(name: str, data_dir: Path | str) -> ImageTable:
    """Load a registered dataset, or `folder:PATH` / `csv:PATH` for a user's own labelled images; byte-identical
    copies of one image are one scene, or refused (tasks/datasets/copies.py)."""
    from tasks.datasets.copies import identify_copies

    for prefix, loader in PREFIX_LOADERS.items():
        if name.startswith(prefix + ":"):
            if not name[len(prefix) + 1 :].strip():
                raise UserError(
                    f"{name!r} names no {prefix}; give one, e.g. {prefix}:/path/to/my-images"
                    f"{'.csv' if prefix == 'csv' else ''}"
                )
            return identify_copies(loader(Path(name[len(prefix) + 1 :]).expanduser()))
    spec = dataset_spec(name)
    return identify_copies(spec.load(dataset_root(spec, Path(data_dir))))
