"""The harness and everything a user reads: CLI, runner, statistics, results files, reports."""

__version__ = "0.1.0"
