"""What a dataset's groups name, so that a `--source` and a task can be asked whether they share a scene.

A table's `scenes` says in which namespace its group ids are scene names: `hirise-observation` (HiRISE
observation ids, `ESP_011623_2100`), `ctx-product` (CTX product ids), `msl-sol` (MSL sols), `group` (a user's
own `group` column, names of no known kind), or '' when a group is only the image itself (AID, `folder:`, a
CSV without a group column). A CSV's group column is recognised as one of the known kinds when every name in it
is one. Two tables share scenes only when their namespaces are comparable: the same kind, or either a user's
`group` column (its names are compared as written).

A source that holds scenes of the task's target pool pre-trains on the very scenes the episodes test (HiRISE v3
crops come from observations that v1 also holds): `scene_overlap` counts them, the run prints a notice and
the table header the count, and `--source-disjoint` refuses such a source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

KINDS = {
    "hirise-observation": "HiRISE observation ids",
    "ctx-product": "CTX product ids",
    "msl-sol": "MSL sols",
    "group": "group names",
}
PATTERNS = (
    ("hirise-observation", re.compile(r"[A-Z]{3}_\d{6}_\d{4}")),
    ("ctx-product", re.compile(r"[A-Z]\d{2}_\d{6}_\d{4}_X[A-Z]_\d{2}[NS]\d{3}[EW]")),
    ("msl-sol", re.compile(r"\d{4}")),
)
SHOWN = 3  # scene names a line names


def namespace_of(groups) -> str:
    """The kind every group name is (PATTERNS), else `group`: a user's own names."""
    names = {str(g) for g in groups}
    for kind, pattern in PATTERNS:
        if names and all(pattern.fullmatch(n) for n in names):
            return kind
    return "group"


def comparable(a: str, b: str) -> bool:
    return bool(a) and bool(b) and (a == b or "group" in (a, b))


@dataclass(frozen=True)
class SceneOverlap:
    """The target scenes of a task that its source also holds (`shared`, sorted), of `target_scenes`."""

    source: str
    kind: str
    shared: tuple[str, ...]
    target_scenes: int

    def header(self) -> str:
        """The table header's line."""
        return (
            f"source {self.source} holds {len(self.shared)} of the {self.target_scenes} target scenes "
            f"({KINDS.get(self.kind, self.kind)})"
        )

    def line(self, task: str) -> str:
        """The notice (or, with --source-disjoint, the error) for a source that shares scenes."""
        named = ", ".join(self.shared[:SHOWN]) + (", ..." if len(self.shared) > SHOWN else "")
        return (
            f"--source {self.source} holds {len(self.shared)} of the {self.target_scenes} scenes of task {task}'s "
            f"target pool ({KINDS.get(self.kind, self.kind)}: {named}): pre-training sees the scenes the episodes "
            "test"
        )


def scene_overlap(spec: str, target_table, target_rows, source_table, source_rows) -> SceneOverlap | None:
    """The target scenes `spec`'s rows also hold, or None when the two name their scenes in no common namespace."""
    ours, theirs = getattr(target_table, "scenes", ""), getattr(source_table, "scenes", "")
    if not comparable(ours, theirs):
        return None
    target = set(np.asarray(target_table.groups, dtype=object)[np.asarray(target_rows, dtype=np.int64)].astype(str))
    held = set(np.asarray(source_table.groups, dtype=object)[np.asarray(source_rows, dtype=np.int64)].astype(str))
    return SceneOverlap(spec, ours if ours != "group" else theirs, tuple(sorted(target & held)), len(target))
