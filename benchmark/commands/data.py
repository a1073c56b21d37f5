"""`bench data download NAME` (fetch, verify the checksum, unpack) and `bench data verify NAME` (decode every
image, count images and source scenes per class and split)."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmark.cli import add_common, default_data_dir, positive_int
from common.errors import UserError

VERIFY_WORKERS = 4
VERIFY_IMAGE_SIZE = 64  # decoding is what is checked: a small size keeps it fast


def add_parser(sub) -> None:
    data = sub.add_parser("data", help="download and verify datasets")
    actions = data.add_subparsers(dest="action", required=True)

    dl = actions.add_parser("download", help="download a dataset, check its checksum and unpack it")
    dl.add_argument("name", help="registered dataset name (see `bench list`)")
    dl.add_argument("--md5", default=None, help="expected MD5 of the archive (as Zenodo lists it)")
    dl.add_argument("--sha256", default=None, help="expected SHA-256 of the archive")
    dl.add_argument("--url", default=None, help="download from this URL (a mirror) instead of the official one")
    add_common(dl)
    dl.set_defaults(handler=cmd_download)

    verify = actions.add_parser("verify", help="decode every image of a dataset and count classes and scenes")
    verify.add_argument("name", help="registered dataset name, folder:PATH or csv:PATH")
    verify.add_argument(
        "--image-size",
        type=positive_int("image-size"),
        default=VERIFY_IMAGE_SIZE,
        help="decode and resize to this size",
    )
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    add_common(verify)
    verify.set_defaults(handler=cmd_verify)


def cmd_download(args) -> int:
    from benchmark.console import console
    from tasks.datasets import dataset_spec

    spec = dataset_spec(args.name)
    if spec.download is None:
        raise UserError(f"dataset {spec.name} has no scripted download; {spec.how_to_get}")
    data_dir = Path(args.data_dir or default_data_dir())
    started = time.perf_counter()
    shown = {"mib": -1}

    def report(done: int, total: int | None) -> None:
        mib = done >> 20
        if mib >= shown["mib"] + 50:
            shown["mib"] = mib
            of = f" of {total >> 20}" if total else ""
            console.print(f"[dim]{mib}{of} MiB[/dim]", highlight=False)

    dest = spec.download(data_dir, md5=args.md5, sha256=args.sha256, url=args.url, report=report)
    console.print(
        f"{spec.name}: checksum verified, unpacked into {dest} ({time.perf_counter() - started:.1f} s); "
        f"check it with `bench data verify {spec.name}`",
        highlight=False,
    )
    return 0


def verify_images(paths, size: int, advance=lambda n=1: None, workers: int = VERIFY_WORKERS) -> list[str]:
    """Decode every image with the suite's own loader; returns the one-line problems, in path order."""
    from methods.features import load_image

    def check(path):
        try:
            load_image(path, size)
            return None
        except UserError as exc:
            return str(exc)

    problems = []
    with ThreadPoolExecutor(workers) as pool:
        for problem in pool.map(check, paths, chunksize=32):
            if problem:
                problems.append(problem)
            advance(1)
    return problems


def cmd_verify(args) -> int:
    from rich.table import Table

    from benchmark.console import RichProgressReporter, console, stdout
    from tasks.datasets import load_dataset

    started = time.perf_counter()
    table = load_dataset(args.name, Path(args.data_dir or default_data_dir()))
    progress = RichProgressReporter(enabled=not args.quiet)
    with progress.bar(f"decoding {len(table)} images", len(table)) as advance:
        problems = verify_images(list(table.paths), args.image_size, advance)
    if problems:
        more = f" (and {len(problems) - 1} more unreadable images)" if len(problems) > 1 else ""
        raise UserError(problems[0] + more)

    labels, groups, splits = table.labels, table.groups.astype(str), table.splits.astype(str)
    split_names = [s for s in ("train", "val", "test", "base", "target") if s in set(splits)]
    split_names += sorted(set(splits) - set(split_names) - {""})
    out = Table(title=table.name)
    out.add_column("class")
    out.add_column("images", justify="right")
    out.add_column("groups", justify="right")
    for s in split_names:
        out.add_column(s, justify="right")
    per_split = Counter(zip(labels.tolist(), splits.tolist()))
    for c, name in enumerate(table.class_names):
        mask = labels == c
        out.add_row(
            name, str(int(mask.sum())), str(len(set(groups[mask]))), *[str(per_split[(c, s)]) for s in split_names]
        )
    out.add_row(
        "all",
        str(len(table)),
        str(len(set(groups))),
        *[str(int((splits == s).sum())) for s in split_names],
        style="bold",
    )
    stdout.print(out)
    stdout.print(
        f"{table.name}: {len(table)} images, {len(set(groups))} groups (source scenes), "
        f"{len(table.class_names)} classes",
        highlight=False,
    )
    shared = {s: set(groups[splits == s]) for s in split_names}
    for i, a in enumerate(split_names):
        for b in split_names[i + 1 :]:
            common = shared[a] & shared[b]
            if common:
                stdout.print(f"note: {len(common)} groups have images in both {a} and {b}", highlight=False)
    console.print(f"all {len(table)} images decode ({time.perf_counter() - started:.1f} s)", highlight=False)
    return 0
