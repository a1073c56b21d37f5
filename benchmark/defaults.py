"""The defaults every command shares, in one place (imports nothing of ours, so every module may use it)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Defaults:
    """The defaults every command shares (the methods' own defaults, methods.backbones.DEFAULT_BACKBONE and
    methods.features.DEFAULT_IMAGE_SIZE, equal these: tests/test_cli_basics.py checks it without importing torch
    here)."""

    task: str = "hirise-regions"
    shots: tuple[int, ...] = (1, 5, 10, 20)
    n_way: int = 5
    n_query: int = 15
    episodes: int = 600
    backbone: str = "efficientnet_lite0"
    image_size: int = 128
    # where episodes come from: tasks.registry.SPLITS, repeated here so that the CLI parses without importing
    # tasks (tests/test_validation.py checks they agree)
    splits: tuple[str, ...] = ("target", "validation")
    # A user's runs go here, the reference results that ship with the project stay in results/
    runs: Path = Path("runs")
    reference: Path = Path("results")
    # seconds a --ray-address may take to accept a connection before the run stops with an error (--ray-timeout)
    ray_timeout: float = 30.0


DEFAULTS = Defaults()
SEED_MAX = 2**63 - 1  # numpy seeds any size, but results files and pandas hold seeds as int64
MAX_SEEDS = 10_000  # seeds are listed before any work: a mistyped range must not run for days
