"""What `bench perf` measures and how much of it: its own defaults, torch-free so that `bench` parses fast."""

from __future__ import annotations

from dataclasses import dataclass

from common.settings import DEFAULTS


@dataclass(frozen=True)
class PerfOptions:
    """What `bench perf` measures and how much of it (the run settings, `Settings`, say on what)."""

    episodes: int = DEFAULTS.episodes  # 5-way 5-shot 15-query episodes of the throughput rows
    extraction_images: int = 512
    warm_method: str = "sdft"  # the method of the warm-start row
    memory_methods: tuple[str, ...] = ()  # methods of the measured full run (empty: every built-in method)
    memory_shots: str = ",".join(map(str, DEFAULTS.shots))
    memory_episodes: int = 1
    ray_method: str | None = None  # None: sdft where its step 1 is cached, else sdft-no-step1; "none": no row
    ray_episodes: int = 40
    step1_batches: int = 4
    sandbox_episodes: int = 20
    transductive_episodes: int = 100
