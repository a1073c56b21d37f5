"""`bench`: run methods on shared episodes, list what exists, and read results."""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from tasks.errors import UserError


class ArgumentError(UserError):
    pass


class Parser(argparse.ArgumentParser):
    """argparse that raises a one-line UserError instead of printing usage and exiting."""

    def error(self, message):
        # argparse says "argument --shots: " before a message of ours that already names --shots
        message = re.sub(r"^argument (--[\w-]+): (?=\1\b)", "", message)
        raise ArgumentError(f"{message} (see `{self.prog} --help`)")


def positive_int(name: str):
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name} must be a positive integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"--{name} must be a positive integer, got {text!r}")
        return value

    return convert


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shots must be positive integers separated by commas, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"--shots must be positive integers separated by commas, got {text!r}")
    return sorted(set(values))


def default_data_dir() -> str:
    return os.environ.get("BENCH_DATA_DIR", "data")


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="folder holding the datasets (default: $BENCH_DATA_DIR or ./data)")
    p.add_argument("--cache-dir", default=None, help="feature/checkpoint cache (default: $BENCH_CACHE_DIR or "
                                                     "~/.cache/marsfsl)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


# Each module in benchmark/commands/ defines add_parser(sub), which sets a `handler` default.
COMMAND_MODULES = ["run", "list", "leaderboard", "report", "data", "map", "craters", "perf", "fixedk"]


def build_parser() -> Parser:
    parser = Parser(prog="bench", description="marsfsl: few-shot benchmark for Martian landform mapping")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    for name in COMMAND_MODULES:
        importlib.import_module(f"benchmark.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug, not bad input: still one line, the traceback behind --debug
        if debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; finished episodes are saved, run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
