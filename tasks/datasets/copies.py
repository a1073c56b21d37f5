"""The same image is one image: byte-identical files of one dataset, found by the digests the data identity
already computes (content.py).

A copy of a file under another name (or a hard link, or a symlink) is not a second image. Of the rows whose
files hold the same bytes:
- with one label, and all inside or all outside the test (`test`/`target`) split, the copies become one scene:
  every group holding one of them is merged into one, named by the smallest of their names. They then never sit
  on both sides of an episode, of a scene-disjoint base/target split or of a fixed-K split. One notice names a
  few copies;
- with two labels, one image would be two classes: refused, naming both files;
- one in the test split and another outside it, a test image would be trained on (or drawn as a fixed-K
  training image): refused, naming both files.
A table without copies is returned unchanged (the same object): its rows, groups, identity and episodes are
what they were.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import fields, replace

from common.errors import UserError, notice_once
from tasks.datasets.base import ImageTable, relative_paths

TEST_SPLITS = frozenset({"test", "target"})  # the split values whose images are scored, never trained on
SHOWN = 3  # copies named in a notice


def copy_sets(digests) -> list[list[int]]:
    """Row indices of each content held by more than one row, in row order (first rows first)."""
    rows: dict[str, list[int]] = defaultdict(list)
    for i, digest in enumerate(digests):
        rows[digest].append(i)
    return [r for r in rows.values() if len(r) > 1]


def identify_copies(table: ImageTable, cache_dir=None) -> ImageTable:
    """`table` with the scenes of its byte-identical copies merged (module docstring); a one-line UserError for a
    copy under another label or across the test split."""
    sets = copy_sets(table.content_digests(cache_dir))
    if not sets:
        return table
    names = relative_paths(table.paths)
    labels, splits = table.labels, [str(s).strip().lower() for s in table.splits]
    for rows in sets:
        check_copies(table, rows, names, labels, splits)
    frame = table.frame.copy()
    frame["group"] = merged_groups(list(map(str, table.groups)), sets)
    n_copies = sum(len(r) - 1 for r in sets)
    shown = "; ".join(" = ".join(names[i] for i in r[:3]) for r in sets[:SHOWN])
    line = notice_once(
        f"{table.name}: {n_copies} file(s) are byte-identical copies of another ({len(sets)} image(s) "
        f"held more than once), e.g. {shown}; each image's copies are kept in one scene"
    )
    merged = replace(table, frame=frame, notices=(*table.notices, line))
    for key, value in vars(table).items():  # what a reader attached (marsbench_root, group_rule)
        if key not in {f.name for f in fields(ImageTable)}:
            object.__setattr__(merged, key, value)
    return merged


def check_copies(table: ImageTable, rows: list[int], names, labels, splits) -> None:
    first = rows[0]
    for i in rows[1:]:
        if labels[i] != labels[first]:
            raise UserError(
                f"{table.name}: {names[first]} ({table.class_names[labels[first]]}) and {names[i]} "
                f"({table.class_names[labels[i]]}) hold the same bytes under two labels; one image "
                "cannot be two classes: remove one of them or correct its label"
            )
        if (splits[i] in TEST_SPLITS) != (splits[first] in TEST_SPLITS):
            raise UserError(
                f"{table.name}: {names[first]} (split {splits[first] or 'none'}) and {names[i]} (split "
                f"{splits[i] or 'none'}) hold the same bytes on both sides of the train/test split; a test "
                "image would be trained on: remove one of them"
            )


def merged_groups(groups: list[str], sets: list[list[int]]) -> list[str]:
    """Each row's group, the groups that share an image joined into one (named by the smallest name)."""
    parent: dict[str, str] = {}

    def root(g: str) -> str:
        while parent.get(g, g) != g:
            g = parent[g]
        return g

    for rows in sets:
        roots = sorted({root(groups[i]) for i in rows})
        for other in roots[1:]:
            parent[other] = roots[0]
    return [root(g) for g in groups]
