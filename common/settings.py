"""The run settings and their defaults: the only place that holds them.

A `Settings` is frozen and imports neither torch nor anything of ours above common/, so that every layer may
take its defaults from it (tasks.registry.SPLITS, methods.backbones.DEFAULT_BACKBONE,
methods.features.DEFAULT_IMAGE_SIZE, methods.base.Context, the harness's configs) and the CLI parses without
loading torch. `bench` builds one from the environment (`Settings.from_environment`), shows its values as the
options' defaults and replaces them with the flags given (`with_args`); `benchmark.session.session` applies
the settings that live in process-wide state (the cache folder, the thread policy) for the length of a run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

SEED_MAX = 2**63 - 1  # numpy seeds any size, but results files and pandas hold seeds as int64
MAX_SEEDS = 10_000  # seeds are listed before any work: a mistyped range must not run for days
MAX_EPISODES = 100_000  # episodes are drawn before any work: a mistyped count must not hang the run

DATA_DIR_VARIABLE = "BENCH_DATA_DIR"
CACHE_DIR_VARIABLE = "BENCH_CACHE_DIR"


def _home_cache() -> Path:
    return Path.home() / ".cache" / "marsfsl"


@dataclass(frozen=True)
class Settings:
    """What a run is asked to do and where, with the defaults every command shares."""

    task: str = "hirise-regions"
    shots: tuple[int, ...] = (1, 5, 10, 20)
    n_way: int = 5
    n_query: int = 15
    episodes: int = 600
    seed: int = 0  # episode draws (bench run, tune) and the methods' own seed (bench map)
    fixedk_seeds: tuple[int, ...] = tuple(range(10))  # the draws `bench fixedk` averages over
    # `bench tune`: one K, and fewer episodes than a run (a grid runs them once per setting)
    tune_shots: int = 5
    tune_episodes: int = 200
    backbone: str = "efficientnet_lite0"
    image_size: int = 128  # a built-in backbone's input size (a timm backbone: its pretrained config's)
    device: str = "auto"  # methods.devices.resolve_device: the first accelerator torch sees, else the CPU
    # where episodes come from: the first is the default (`bench run --split`)
    splits: tuple[str, ...] = ("target", "validation")
    data_dir: Path = Path("data")  # $BENCH_DATA_DIR in from_environment
    cache_dir: Path = _home_cache()  # $BENCH_CACHE_DIR in from_environment
    threads: int | None = None  # worker threads of the thread policy (None: torch's thread count, all cores)
    # A user's runs go here, the reference results that ship with the project stay in results/
    runs: Path = Path("runs")
    reference: Path = Path("results")
    # seconds a --ray-address may take to accept a connection before the run stops with an error (--ray-timeout)
    ray_timeout: float = 30.0

    @property
    def split(self) -> str:
        return self.splits[0]

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The defaults, with the folders the environment names ($BENCH_DATA_DIR, $BENCH_CACHE_DIR)."""
        environ = os.environ if environ is None else environ
        # $HOME as it is now, not when this module was imported
        return replace(
            cls(),
            data_dir=Path(environ.get(DATA_DIR_VARIABLE) or cls.data_dir),
            cache_dir=Path(environ.get(CACHE_DIR_VARIABLE) or _home_cache()),
        )

    def with_args(self, args) -> Settings:
        """These settings with the values of a parsed command line (argparse's namespace) in place of theirs;
        a command without an option keeps the setting, an option left at None (a default decided later, e.g.
        a timm backbone's image size) too."""
        changes = {}
        for name in (f.name for f in fields(self)):
            value = getattr(args, ARG_NAMES.get(name, name), None)
            if value is None:
                continue
            if name in ("data_dir", "cache_dir", "runs", "reference"):
                value = Path(value)
            elif name == "shots":  # a list, or one K (bench tune)
                value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
            changes[name] = value
        if getattr(args, "split", None) is not None:  # the chosen split first: it is the run's
            changes["splits"] = (args.split, *(s for s in self.splits if s != args.split))
        return replace(self, **changes)

    def replace(self, **changes) -> Settings:
        return replace(self, **changes)


# The command-line option (argparse dest) of a setting whose name differs from it
ARG_NAMES = {"n_way": "ways", "n_query": "queries"}

DEFAULTS = Settings()  # the defaults alone, whatever the environment says
