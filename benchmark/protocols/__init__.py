"""The protocols that benchmark/pipeline.run runs: what a unit of work is, how it is scored, its schema.

- episodes.py: N-way K-shot episodes, one row per (method, shots, episode) (`bench run`);
- fixedk.py: K images per class, the whole test pool, one row per (method, shots, seed) (`bench fixedk`);
- craters.py: the CTX crater map, one row per (method, shots, smoothing, seed) (`bench craters run`).

A new protocol is a class of pipeline.Protocol in a module here, plus the command that parses its arguments
(benchmark/commands/) and calls pipeline.run with it.
"""

from __future__ import annotations

from benchmark import runner
from benchmark.pipeline import Protocol
from methods.cache import Cache
from tasks.registry import load_task


class TaskProtocol(Protocol):
    """A protocol whose units are answered on a task that the config names (episodes, fixed-K)."""

    def open_task(self, **load_options) -> None:
        """The run's cache, its task, results path and methods, in the order that makes bad input fail first: an
        unknown task or source, then an unknown method or option, all before any work."""
        config = self.config
        self.cache = Cache(config.cache_dir)
        self.task = load_task(
            config.task,
            config.data_dir,
            source=config.source,
            image_size=config.image_size,
            source_disjoint=config.source_disjoint,
            **load_options,
        )
        self.out = config.results_path()
        self.methods = runner.created_methods(config, self.cache, self.out)
