"""Helpers for the reliability tests: tiny PNG datasets, `bench` as a subprocess, result rows to compare."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(sys.executable).parent / "bench"
# Columns that legitimately differ between two runs of one command: wall-clock time, when it ran, and the
# commit it ran from (a resumed run may run newer code; in a shared work tree, HEAD moves during tests).
VOLATILE = ("seconds", "timestamp", "git_commit")


def make_folder_dataset(root: Path, n_classes: int = 3, per_class: int = 10, size: int = 32) -> Path:
    """root/class<c>/<i>.png: noisy images tinted by class, so methods do better than chance."""
    rng = np.random.default_rng(0)
    for c in range(n_classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            img[:, :, c % 3] += 150
            Image.fromarray(img).save(root / f"class{c}" / f"{i}.png")
    return root


def bench_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BENCH_CACHE_DIR")}
    env.update(OMP_NUM_THREADS="1", COLUMNS="200", PYTHONHASHSEED="0")
    env.update(extra)
    return env


def bench(*args, cwd=None, timeout=600, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BENCH), *map(str, args)], capture_output=True, text=True, env=bench_env(**env), cwd=cwd, timeout=timeout
    )


def bench_popen(*args, cwd=None, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BENCH), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=bench_env(**env),
        cwd=cwd,
    )


def run_args(data: Path, out: Path, cache: Path, *extra, method="linear-probe", episodes=6, shots="1") -> list:
    return [
        "run",
        "--method",
        method,
        "--task",
        f"folder:{data}",
        "--shots",
        shots,
        *"--ways 3 --queries 2 --episodes".split(),
        episodes,
        *"--image-size 32 --quiet --cache-dir".split(),
        cache,
        "--out",
        out,
        *extra,
    ]


def read_rows(path: Path) -> list[dict]:
    """Rows of a results CSV with the csv module (independent of benchmark.results)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def stable(rows: list[dict]) -> list[tuple]:
    """Rows without the volatile columns, sorted by their key: what two runs of one command must agree on."""
    from benchmark.results import COLUMNS, KEY

    cols = [c for c in COLUMNS if c not in VOLATILE]
    return sorted((tuple(r[c] for c in KEY), tuple(r[c] for c in cols)) for r in rows)


def line_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0
