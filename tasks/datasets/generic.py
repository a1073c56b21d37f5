"""A user's own labelled images without code: `folder:PATH` (one sub-folder per class) or `csv:PATH`."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.datasets.base import ImageTable, dataset_root, dataset_spec, table_from_rows
from tasks.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}


def load_folder(root: Path) -> ImageTable:
    """PATH/<class>/<image>; each image is its own group (use csv: to give source scenes)."""
    if not root.is_dir():
        raise UserError(f"folder dataset {root} does not exist; give a folder with one sub-folder per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [label] * len(files)
    if len(classes) < 2 or not paths:
        raise UserError(f"folder dataset {root} needs at least two class sub-folders holding images")
    groups = [str(p.relative_to(root)) for p in paths]
    check_scenes(f"folder dataset {root}", groups)
    return table_from_rows(f"folder:{root}", paths, labels, groups, classes)


def load_csv(path: Path) -> ImageTable:
    """Columns `path,label` and optionally `group,split`; relative paths are relative to the CSV."""
    if not path.is_file():
        raise UserError(f"CSV dataset {path} does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"CSV dataset {path} cannot be read ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if missing:
        raise UserError(f"CSV dataset {path} lacks column(s) {', '.join(missing)}; it needs path,label "
                        "and optionally group,split")
    if frame.empty:
        raise UserError(f"CSV dataset {path} has no rows")
    files = [Path(p) if Path(p).is_absolute() else path.parent / p for p in frame["path"]]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise UserError(f"CSV dataset {path}: {len(absent)} image path(s) do not exist, first {absent[0]}")
    classes = sorted(set(frame["label"]))
    labels = [classes.index(v) for v in frame["label"]]
    groups = frame["group"] if "group" in frame.columns else [str(f) for f in files]
    splits = frame["split"] if "split" in frame.columns else None
    if splits is None or not (set(splits) <= {"base", "target"} and "target" in set(splits)):
        check_scenes(f"CSV dataset {path}", groups)  # no base/target column: the scene split makes one
    return table_from_rows(f"csv:{path}", files, labels, groups, classes, splits)


def check_scenes(what: str, groups) -> None:
    """The scene-disjoint base/target split deals whole scenes (groups) into folds: it needs one per fold."""
    import inspect

    from tasks.splits import scene_split

    folds = inspect.signature(scene_split).parameters["n_folds"].default
    n = len(set(map(str, groups)))
    if n < folds:
        raise UserError(f"{what} has {n} scene(s) (groups; each image is its own without a group column), too few "
                        f"for the scene-disjoint base/target split, which needs {folds}; add images, or give a CSV "
                        "with a split column of base/target")


PREFIX_LOADERS = {"folder": load_folder, "csv": load_csv}


def load_dataset(name: str, data_dir: Path | str) -> ImageTable:
    """Load a registered dataset, or `folder:PATH` / `csv:PATH` for a user's own labelled images."""
    for prefix, loader in PREFIX_LOADERS.items():
        if name.startswith(prefix + ":"):
            if not name[len(prefix) + 1 :].strip():
                raise UserError(f"{name!r} names no {prefix}; give one, e.g. {prefix}:/path/to/my-images"
                                f"{'.csv' if prefix == 'csv' else ''}")
            return loader(Path(name[len(prefix) + 1 :]).expanduser())
    spec = dataset_spec(name)
    return spec.load(dataset_root(spec, Path(data_dir)))
