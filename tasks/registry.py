"""Tasks: a dataset, a base pool that methods may pre-train on, and a target pool that episodes come from.

Named tasks are registered with `@register_task(name, description)` on a function data_dir -> Task (entry
points of group `marsfsl.tasks` add outside ones, as (description, function) pairs); `folder:PATH` and
`csv:PATH` make a task of a user's own images.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import UserError, notice_once
from common.registry import Registry
from common.settings import DEFAULTS
from tasks.datasets import ImageTable, load_dataset
from tasks.datasets.content import file_digests
from tasks.datasets.scenes import SceneOverlap, scene_overlap
from tasks.episodes import SAMPLER_VERSION, EpisodeSet, PoolIndex, sample_episodes
from tasks.splits import class_split, scene_split, validation_split

SPLIT_SEED = 0  # the base/target split is fixed, whatever the episode seed
PIXEL_CHECK_SIZE = 128  # where no image size is given, a source's pixels are compared at the default one
VALIDATION_SEED = 0  # so is the validation slice carved out of the base pool
SPLITS = DEFAULTS.splits  # where `bench run --split` draws episodes (common/settings.py)
VALIDATION_SUFFIX = "@validation"  # a validation task's name: its rows and manifests can't pass for target ones


@dataclass(frozen=True, eq=False)
class Task:
    name: str
    description: str
    table: ImageTable
    base: np.ndarray  # table indices methods may pre-train on (labels included)
    target: np.ndarray  # table indices episodes are drawn from
    source: str = ""  # the --source whose images are the base pool ("" when the task's own)
    plain: Task | None = None  # with a source: the same task without it, whose episodes these are
    overlap: SceneOverlap | None = None  # with a source: the target scenes it also holds (None: not comparable)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.table.class_names

    def fingerprint(self, cache_dir=None) -> str:
        """Keys caches: the table's content fingerprint and the pools, not the task's name (a `folder:` task is
        named by its folder's location, which must not split caches)."""
        return self._with_pools(self.table.fingerprint(cache_dir), name="")

    def identity(self) -> str:
        """Names episode streams: the table's location-independent identity and the pools."""
        return self._with_pools(self.table.identity())

    def _with_pools(self, table_hash: str, name: str | None = None) -> str:
        h = hashlib.sha256(f"{self.name if name is None else name}\x00{table_hash}".encode())
        h.update(np.asarray(self.base, np.int64).tobytes())
        h.update(np.asarray(self.target, np.int64).tobytes())
        return h.hexdigest()[:16]

    def notes(self) -> list[str]:
        """Lines a results table's header carries about the task's data: with a source, how many target scenes
        it also holds (where the two name scenes alike)."""
        return [self.overlap.header()] if self.overlap is not None else []

    def split(self, name: str) -> Task:
        """This task ("target") or its validation task ("validation")."""
        if name == "target":
            return self
        if name == "validation":
            return self.validation()
        raise UserError(f"unknown split {name!r}; use one of: {', '.join(SPLITS)}")

    def validation(self) -> Task:
        """The task whose episodes choose settings: target = a validation slice of this task's base pool,
        base = the rest of the base pool less the slice's scenes (tasks.splits.validation_split). Named
        `<name>@validation`, so its rows, manifests and caches are never those of the target episodes."""
        if self.name.endswith(VALIDATION_SUFFIX):
            raise UserError(f"task {self.name} is a validation task already")
        if self.plain is not None:  # its episodes are the plain task's target episodes
            raise UserError(
                f"task {self.name}: take the validation split before adding a source "
                "(load_task(name, data_dir, source=..., split='validation'))"
            )
        base, validation = validation_split(
            self.table.labels, self.table.groups, self.base, self.target, VALIDATION_SEED
        )
        return replace(
            self,
            name=self.name + VALIDATION_SUFFIX,
            description=f"{self.description}; validation slice of its base pool",
            base=base,
            target=validation,
        )

    def target_index(self) -> PoolIndex:
        return PoolIndex(self.table.labels, self.table.groups, self.target)

    def episodes(self, n_way: int, n_shot: int, n_query: int, n_episodes: int, seed: int) -> EpisodeSet:
        if self.plain is not None:  # the target rows lead the table: a source leaves every episode as it is
            return self.plain.episodes(n_way, n_shot, n_query, n_episodes, seed)
        stream = f"{self.name}|{self.identity()}|{n_way}|{n_shot}|{n_query}|{seed}|v{SAMPLER_VERSION}"
        return sample_episodes(
            self.name, stream, self.target_index(), n_way, n_shot, n_query, n_episodes, seed, self.class_names
        )


# name -> (description, make)
TASKS = Registry(
    "task", "marsfsl.tasks", hint=lambda reg: f"known: {', '.join(reg)}, or folder:PATH, csv:PATH, marsbench:PATH"
)


def register_task(name: str, description: str):
    """Decorator: register `make(data_dir) -> Task` as the task `name`."""

    def wrap(make: Callable[[Path], Task]):
        TASKS.register(name, (description, make))
        return make

    return wrap


def region_task(name: str, table: ImageTable, description: str) -> Task:
    base, target = scene_split(table.labels, table.groups, seed=SPLIT_SEED)
    return Task(name, description, table, base, target)


@register_task("hirise-regions", "HiRISE v1, scene-disjoint base/target regions (default)")
def make_hirise_regions(data_dir: Path) -> Task:
    return region_task(
        "hirise-regions",
        load_dataset("hirise-v1", data_dir),
        "HiRISE v1, observations split 60/40 per class into base and target regions",
    )


# A fixed class-disjoint split of AID's 30 classes (drawn once with numpy seed 0, written out here).
AID_TARGET_CLASSES = (
    "Airport",
    "BareLand",
    "Beach",
    "Desert",
    "Farmland",
    "Meadow",
    "Mountain",
    "Pond",
    "River",
    "Viaduct",
)


@register_task("aid-classes", "AID Earth scenes, 20 base / 10 target classes")
def make_aid_classes(data_dir: Path) -> Task:
    table = load_dataset("aid", data_dir)
    base, target = class_split(table.labels, table.class_names, AID_TARGET_CLASSES)
    return Task("aid-classes", "AID (Earth), 20 base classes, 10 target classes", table, base, target)


@register_task("domars16k", "DoMars16k CTX landforms, base = train+val, target = test")
def make_domars16k(data_dir: Path) -> Task:
    table = load_dataset("domars16k", data_dir)
    splits = table.splits
    return Task(
        "domars16k",
        "DoMars16k (CTX): base = train + val, target = test",
        table,
        np.flatnonzero(splits != "test"),
        np.flatnonzero(splits == "test"),
    )


@register_task("ctx-craters", "CTX crater / non-crater windows, grouped by CTX tile, base/target by tiles")
def make_ctx_craters(data_dir: Path) -> Task:
    from tasks.datasets.copies import identify_copies
    from tasks.datasets.ctx_crater_windows import load_ctx_craters, tile_split

    # copies of a window in two tiles become one scene, named by one tile, so tile_split keeps them on one side
    table = identify_copies(load_ctx_craters(data_dir))
    base, target = tile_split(table)
    return Task(
        "ctx-craters",
        "CTX crater / non-crater windows; base = left tile column, target = 6 other tiles",
        table,
        base,
        target,
    )


PREFIXES = ("folder:", "csv:", "marsbench:")


def user_table_task(spec: str, data_dir: Path) -> Task:
    """`folder:PATH` or `csv:PATH`, named by the dataset's one spelling (tasks/datasets/generic.py): the CSV's
    split column if it has one (base = base or train + val, target = target or test), else a scene split."""
    from tasks.datasets.generic import split_pool

    table = load_dataset(spec, data_dir)
    pools = np.array([split_pool(s) for s in table.splits], dtype=object)
    if (pools == "target").any():
        return Task(
            table.name,
            f"{table.name} (its own base/target split)",
            table,
            np.flatnonzero(pools == "base"),
            np.flatnonzero(pools == "target"),
        )
    return region_task(table.name, table, f"{table.name}, scene-disjoint 60/40 base/target split")


def load_task(
    name: str,
    data_dir: Path | str,
    source: str | None = None,
    split: str = DEFAULTS.split,
    keep_out: Sequence[Path | str] = (),
    image_size: int = PIXEL_CHECK_SIZE,
    source_disjoint: bool = False,
) -> Task:
    """The task `name` (`NAME@validation`: NAME's validation task, Task.validation), its `split`, and with
    `source` the same task whose base pool is the source's images (see with_source; `keep_out`: files the
    source must not hold either, such as a scene being mapped; `image_size`: the size at which the source's
    decoded pixels are compared with the task's; `source_disjoint`: refuse a source holding a target scene).

    The split is taken before the source is added: a validation task's episodes then come from the validation
    slice of the task's own base pool, never from its target pool."""
    if name.endswith(VALIDATION_SUFFIX):
        task = load_task(name[: -len(VALIDATION_SUFFIX)], data_dir).validation()
    elif name.startswith(PREFIXES):  # marsbench: as csv: with train/val/test, base = train + val, target = test
        task = user_table_task(name, Path(data_dir))
    else:
        task = TASKS.lookup(name)[1](Path(data_dir))
    task = task.split(split)
    if not source:
        return task
    return with_source(task, source, Path(data_dir), keep_out, image_size=image_size, disjoint=source_disjoint)


def earlier_fingerprints(task: Task) -> set[str]:
    """The data identity `task`'s data had under each earlier way of computing it (tasks/datasets/base.py,
    FINGERPRINT_VERSION): `bench migrate --refresh-data` takes a row's recorded identity as proof that its data
    is unchanged only if it is the current one or one of these.

    Version 1 hashed the task's name, each image's path as loaded, its label and group, and the file's size and
    modification time; it can be recomputed only where the files lie as they did (same folder, same times).
    Version 2 of a task with a source hashed each image's path relative to the folder holding the task's and the
    source's images (for a derived task, the cache folder's location entered it); likewise."""
    table = task.table
    earlier = {task._with_pools(replace(table, parts=()).fingerprint(), name="")} if table.parts else set()
    h = hashlib.sha256()
    h.update(table.name.encode())
    h.update("\x00".join(table.class_names).encode())
    for path, label, group in zip(table.paths, table.labels, table.groups):
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{path}\x00{label}\x00{group}\x00{stamp}\n".encode())
    return {task._with_pools(h.hexdigest()[:16]), *earlier}


def source_rows(spec: str, data_dir: Path) -> tuple[ImageTable, np.ndarray]:
    """(table, rows) a --source SPEC stands for: a task name's base pool, or every image of a dataset spec."""
    if spec in TASKS:
        task = TASKS.lookup(spec)[1](data_dir)
        return task.table, np.asarray(task.base, dtype=np.int64)
    try:
        table = load_dataset(spec, data_dir)
    except UserError as exc:
        if str(exc).startswith("unknown dataset"):
            raise UserError(
                f"--source {spec!r} is neither a task ({', '.join(TASKS)}) nor a dataset "
                "(hirise-v1, aid, ..., csv:PATH, folder:PATH, marsbench:PATH)"
            ) from None
        raise
    return table, np.arange(len(table), dtype=np.int64)


def with_source(
    task: Task,
    spec: str,
    data_dir: Path,
    keep_out: Sequence[Path | str] = (),
    image_size: int = PIXEL_CHECK_SIZE,
    disjoint: bool = False,
) -> Task:
    """`task` whose base pool is `spec`'s images: the table is the task's rows followed by the source's (their
    classes and groups renamed `SPEC/...` so that they never meet the task's), base = the source's rows,
    target = the task's target rows, unchanged, so the episodes are the same as without a source.

    Refuses a source that shares an image with the task's dataset (or a `keep_out` file), by file content or by
    decoded pixels at `image_size`; near-identical images are a notice with their count. A source that holds
    scenes of the target pool (tasks/datasets/scenes.py) is a notice, refused when `disjoint`."""
    src_table, rows = source_rows(spec, Path(data_dir))
    # A dataset source is recorded by its table's name (`folder:` and `csv:` with the absolute, resolved path;
    # a registered dataset's canonical name), not as typed: `folder:data` from two working folders is two
    # sources, and `folder:./data/` from one is the same as `folder:/abs/data`.
    spec = spec if spec in TASKS else src_table.name
    if len(rows) == 0:
        raise UserError(f"--source {spec} has no images to pre-train on")
    overlap = check_source(task, spec, src_table, rows, keep_out, image_size, disjoint)
    n = len(task.table)
    frame, classes = source_appended(task, spec, src_table, rows)
    table = ImageTable(
        name=f"{task.table.name}+{spec}", frame=frame, class_names=classes, parts=(task.table, src_table)
    )
    return Task(
        f"{task.name}+{spec}",
        f"{task.description}; base pool: {spec}",
        table,
        np.arange(n, len(frame), dtype=np.int64),
        np.asarray(task.target, dtype=np.int64),
        source=spec,
        plain=task,
        overlap=overlap,
    )


def check_source(
    task: Task,
    spec: str,
    src_table: ImageTable,
    rows: np.ndarray,
    keep_out: Sequence[Path | str],
    image_size: int,
    disjoint: bool,
) -> SceneOverlap | None:
    """with_source's refusals and notices: shared files or pixels are refused; scenes of the target pool in the
    source are a notice, refused when `disjoint`. Returns the scene overlap (None: no common scene namespace)."""
    check_shared_files(task, spec, src_table, rows, keep_out)
    check_shared_pixels(task, spec, src_table, rows, image_size)
    overlap = scene_overlap(spec, task.table, task.target, src_table, rows)
    if overlap is not None and overlap.shared:
        if disjoint:
            raise UserError(
                f"{overlap.line(task.name)}; --source-disjoint refuses it: choose a source without these scenes"
            )
        notice_once(f"{overlap.line(task.name)}; --source-disjoint refuses such a source")
    return overlap


def source_appended(
    task: Task, spec: str, src_table: ImageTable, rows: np.ndarray
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """(frame, class names) of the task's table followed by the source's `rows`, their classes and groups
    renamed `SPEC/...` and numbered after the task's classes."""
    src = src_table.frame.iloc[rows]
    kept, dense = np.unique(src_table.labels[rows], return_inverse=True)
    frame = pd.concat(
        [
            task.table.frame,
            pd.DataFrame(
                {
                    "path": src["path"].to_numpy(),
                    "label": dense.astype(np.int64) + len(task.class_names),
                    "group": [f"{spec}/{g}" for g in src["group"]],
                    "split": "",  # the source's splits mean nothing here
                }
            ),
        ],
        ignore_index=True,
    )
    classes = task.class_names + tuple(f"{spec}/{src_table.class_names[c]}" for c in kept)
    return frame, classes


def check_shared_files(task: Task, spec: str, src_table: ImageTable, rows: np.ndarray, keep_out) -> None:
    """Refuse a source holding a file of the task's dataset or a `keep_out` file (same bytes)."""
    ours = dict(zip(task.table.content_digests(), task.table.paths))
    try:
        ours.update(zip(file_digests(keep_out), map(str, keep_out)))
    except OSError as exc:
        raise UserError(f"{exc.filename} cannot be read ({exc.strerror})") from None
    theirs = np.asarray(src_table.content_digests(), dtype=object)[rows]
    shared = [(p, ours[d]) for p, d in zip(src_table.paths[rows], theirs) if d in ours]
    if shared:
        named = "; ".join(f"{p} = {q}" for p, q in shared[:3])
        what = f"task {task.name}" + (" or the scene being mapped" if len(keep_out) else "")
        raise UserError(
            f"--source {spec} shares {len(shared)} image(s) with {what} (same file content): "
            f"{named}; choose a source without these images"
        )


def check_shared_pixels(task: Task, spec: str, src_table: ImageTable, rows: np.ndarray, size: int) -> None:
    """Refuse a source holding one of the task's images with other bytes but the same pixels at `size` (a
    re-encoded copy); a notice counts the source's images that are near-identical to one of the task's."""
    from tasks.datasets.pixels import NEAR_RMS, THUMB, near_pairs, pixel_signatures

    ours, our_thumbs = pixel_signatures(task.table.paths, task.table.content_digests(), size)
    theirs, their_thumbs = pixel_signatures(
        src_table.paths[rows], np.asarray(src_table.content_digests(), dtype=object)[rows], size
    )
    where = dict(zip(ours, task.table.paths))
    shared = [(p, where[d]) for p, d in zip(src_table.paths[rows], theirs) if d in where]
    if shared:
        named = "; ".join(f"{p} = {q}" for p, q in shared[:3])
        raise UserError(
            f"--source {spec} holds {len(shared)} image(s) of task {task.name} with the same pixels at "
            f"{size} px in other bytes (re-encoded copies): {named}; choose a source without these images"
        )
    near = near_pairs(our_thumbs, their_thumbs)
    if near:
        i, j = near[0]
        notice_once(
            f"--source {spec} holds {len(near)} image(s) nearly identical to one of task {task.name}'s "
            f"({THUMB}x{THUMB} thumbnails within {NEAR_RMS:g} grey levels), e.g. {src_table.paths[rows][j]} ~ "
            f"{task.table.paths[i]}: resized or lossy copies would put the task's images in pre-training"
        )
