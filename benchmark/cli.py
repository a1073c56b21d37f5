"""`bench`: run methods on shared episodes, list what exists, and read results."""

from __future__ import annotations

import argparse
import copy
import functools
import importlib
import os
import re
import sys
from pathlib import Path

from common.errors import UserError
from common.settings import ARG_NAMES, DEFAULTS, MAX_EPISODES, MAX_SEEDS, SEED_MAX, Settings


class ArgumentError(UserError):
    pass


def has_default(action: argparse.Action) -> bool:
    """Whether --help should name the action's default (None and a switch's False say nothing; 0 does)."""
    return not any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS))


class DefaultsFormatter(argparse.HelpFormatter):
    """--help names every option's default (lists as they are typed: 1,5,10,20); an option whose default is
    None or a switch says in its own words what happens without it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or not action.option_strings or not has_default(action):
            return text
        return f"{text} (default: %(default)s)".strip()

    def _expand_help(self, action):
        if isinstance(action.default, (list, tuple)):
            action = copy.copy(action)
            action.default = ",".join(map(str, action.default))
        return super()._expand_help(action)

    def _format_action(self, action):
        if not action.help and action.option_strings and has_default(action):
            action = copy.copy(action)  # argparse prints no help line, hence no default, for an option without help
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


class Parser(argparse.ArgumentParser):
    """argparse that raises a one-line UserError instead of printing usage and exiting, and shows every default
    in --help. `settings`: the run settings whose values are the options' defaults (commands read them as
    `parser.settings`)."""

    def __init__(self, *args, settings: Settings | None = None, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)
        self.settings = settings if settings is not None else Settings.from_environment()

    def add_subparsers(self, **kwargs):
        kwargs.setdefault("parser_class", functools.partial(Parser, settings=self.settings))  # one settings object
        return super().add_subparsers(**kwargs)

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


def positive_float(name: str):
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (0 < value < float("inf")):
            raise argparse.ArgumentTypeError(f"--{name} must be a positive number, got {text!r}")
        return value

    return convert


def file_path(name: str):
    """argparse type: a file's path; one that ends in a separator names a folder (`Path` would drop the slash
    and write a file named like the folder)."""

    def convert(text: str) -> str:
        if text.endswith(("/", os.sep)) or Path(text).name in ("", ".", ".."):
            folder = text.rstrip("/" + os.sep) or text
            raise argparse.ArgumentTypeError(
                f"--{name} {text} names a folder; give a file, e.g. {Path(folder) / 'results.csv'}"
            )
        return text

    return convert


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--shots must be positive integers separated by commas, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"--shots must be positive integers separated by commas, got {text!r}")
    return sorted(set(values))


def bounded_int(name: str, low: int, high: int | None = None):
    """argparse type: an integer in [low, high], else a one-line error naming the option."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            span = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
            raise argparse.ArgumentTypeError(f"--{name} must be {span}, got {text!r}")
        return value

    return convert


def seed_list(text: str, name: str = "seeds") -> list[int]:
    """argparse type: '0-9', '0,1,2' or a mix ('0-4,7'); integers from 0 to SEED_MAX, sorted, each once."""
    bad = argparse.ArgumentTypeError(
        f"--{name} must be non-negative integers or ranges like 0-9, separated by "
        f"commas, each at most {SEED_MAX}, got {text!r}"
    )
    seeds: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, dash, last = part.partition("-")
        try:
            low, high = int(first), int(last if dash else first)
        except ValueError:
            raise bad from None
        if low < 0 or high < low or high > SEED_MAX:
            raise bad
        if high - low + 1 > MAX_SEEDS:
            raise argparse.ArgumentTypeError(f"--{name} names more than {MAX_SEEDS} seeds, got {text!r}")
        seeds.update(range(low, high + 1))
        if len(seeds) > MAX_SEEDS:
            raise argparse.ArgumentTypeError(f"--{name} names more than {MAX_SEEDS} seeds, got {text!r}")
    if not seeds:
        raise bad
    return sorted(seeds)


IMAGE_SIZES = (16, 1024)  # decoded images are held in memory: (n, 3, S, S) bytes


def add_task_options(p: argparse.ArgumentParser, task_help: str = "") -> None:
    """--task, --backbone, --weights, --image-size: what every command that runs methods on a task's images
    takes (`resolve_backbone` turns them into the backbone's spec and an image size)."""
    settings = p.settings
    p.add_argument("--task", default=settings.task, help=task_help or None)
    p.add_argument(
        "--backbone",
        default=settings.backbone,
        help="a built-in backbone or timm:NAME, any timm architecture, with --weights",
    )
    p.add_argument(
        "--weights",
        default=None,
        metavar="FILE|pretrained",
        help="with --backbone timm:NAME: a state dict or safetensors file of that architecture, or "
        "`pretrained` (timm downloads its own weights)",
    )
    p.add_argument(
        "--image-size",
        type=bounded_int("image-size", *IMAGE_SIZES),
        default=None,
        help=f"(default: {settings.image_size}; a timm backbone: its pretrained config's input size)",
    )
    add_device_option(p)


def resolve_backbone(args, settings: Settings = DEFAULTS) -> None:
    """args.backbone becomes the backbone's spec (methods.backbones.backbone_spec: checked, its weights named)
    and args.image_size, if not given, the backbone's default, before any command runs."""
    if not hasattr(args, "weights") or not hasattr(args, "backbone"):
        return
    from methods.backbones import backbone_spec, default_image_size

    args.backbone = backbone_spec(args.backbone, args.weights)
    if args.image_size is None:
        args.image_size = default_image_size(args.backbone, settings.image_size)
        low, high = IMAGE_SIZES
        if not low <= args.image_size <= high:
            raise UserError(
                f"{args.backbone}'s input size is {args.image_size}; give --image-size from {low} to {high}"
            )


def add_device_option(p: argparse.ArgumentParser) -> None:
    """--device: where every network pass runs (methods/devices.py); every command that runs a network takes it."""
    p.add_argument(
        "--device",
        default=p.settings.device,
        metavar="auto|cpu|cuda|cuda:N|mps",
        help="where networks run: auto = the first accelerator torch sees, else the CPU; "
        "results and caches made on another device type are kept apart",
    )


def add_source_option(p: argparse.ArgumentParser) -> None:
    """--source: the base pool every pre-training method uses instead of --task's (tasks.registry.with_source)."""
    p.add_argument(
        "--source",
        default=None,
        metavar="SPEC",
        help="base pool of every pre-training method: a task (its base pool) or a dataset (all its images)",
    )
    p.add_argument(
        "--source-disjoint",
        action="store_true",
        help="refuse a --source that holds a scene of the target pool (by HiRISE observation, CTX product, "
        "MSL sol or a CSV's group column; without it: a notice with the count)",
    )


def add_benchmark_options(p: argparse.ArgumentParser, out_default: str) -> None:
    """The options `bench run` and `bench fixedk` share (methods, task, shots, features, results policy)."""
    p.add_argument(
        "--method",
        action="append",
        required=True,
        metavar="NAME[:key=value,...]",
        help="method to run (repeat for several)",
    )
    add_task_options(p)
    p.add_argument("--shots", type=int_list, default=list(p.settings.shots), help="labelled images per class")
    p.add_argument("--out", type=file_path("out"), default=None, help=f"results CSV (default: {out_default})")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="set the results file's rows of these methods and shots aside (into NAME.set-aside.csv) "
        "and compute them anew",
    )
    add_reuse_stale(p)
    add_fail_fast(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_source_option(p)
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="who answers the episodes (or seeds): this process (local) or Ray workers "
        "(ray: the [ray] extra; the same rows)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help="with --executor ray: a running Ray instance ('auto': the one `ray start` runs on this "
        "machine, or HOST:PORT); default: start a local one sized to this machine",
    )
    p.add_argument(
        "--isolate",
        action="store_true",
        help="run every method in a bubblewrap sandbox (no network, no data, caches, results or home; "
        "a fresh fork per episode): for untrusted plugins (docs/adding-a-method.md)",
    )
    p.add_argument(
        "--ray-timeout",
        type=positive_float("ray-timeout"),
        default=None,
        metavar="SECONDS",
        help="with --ray-address: how long it may take to answer before the run stops with an error "
        f"(default: {p.settings.ray_timeout:g})",
    )
    add_common(p)


def benchmark_config(args) -> dict:
    """BenchConfig's fields from add_benchmark_options' arguments."""
    from benchmark.runner import MethodSpec
    from methods.devices import resolve_device

    if args.ray_address and args.executor != "ray":
        raise UserError("--ray-address needs --executor ray")
    if args.ray_timeout is not None and not args.ray_address:
        raise UserError("--ray-timeout goes with --ray-address (a local Ray instance is started, not reached)")
    # Ray's workers run on CPUs: there `auto` means the CPU, and an accelerator is refused below
    device = resolve_device("cpu" if args.executor == "ray" and args.device.strip().lower() == "auto" else args.device)
    if args.executor == "ray":
        from benchmark.executors import import_ray

        import_ray()  # not installed: one line saying how, before any work
        if device.type != "cpu":  # workers unpickle the prepared method's tensors where they were
            raise UserError(
                f"--executor ray runs its workers on CPUs; with --device {args.device} ({device}) use "
                "--executor local, or --device cpu with Ray"
            )
    if args.isolate:
        if args.executor == "ray":
            raise UserError("--isolate runs each method in a sandbox on this machine; use it with --executor local")
        from benchmark.sandbox import bwrap

        bwrap()  # missing or unable to start: one line saying how, before any work
    refuse_fresh_with_reuse_stale(args)
    return dict(
        methods=[MethodSpec.parse(m) for m in args.method],
        task=args.task,
        shots=args.shots,
        data_dir=Path(args.data_dir or default_data_dir()),
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        out=Path(args.out) if args.out else None,
        backbone=args.backbone,
        image_size=args.image_size,
        fresh=args.fresh,
        reuse_stale=args.reuse_stale,
        stop_on_failure=args.fail_fast or args.debug,
        source=args.source,
        source_disjoint=args.source_disjoint,
        device=device,
        executor=args.executor,
        ray_address=args.ray_address,
        ray_timeout=args.ray_timeout or args.settings.ray_timeout,
        isolate=args.isolate,
    )


def default_data_dir() -> str:
    return str(Settings.from_environment().data_dir)


def config_from(cls, args, **given):
    """A config dataclass `cls` from the flags named as its fields (or as common.settings.ARG_NAMES renames
    them: n_way is --ways); `given` holds the fields whose value is not a flag's own (parsed or resolved). A
    field without a flag keeps its default."""
    import dataclasses

    options = {f.name: ARG_NAMES.get(f.name, f.name) for f in dataclasses.fields(cls)}
    flags = {name: getattr(args, option) for name, option in options.items() if hasattr(args, option)}
    return cls(**{**flags, **given})


def add_fail_fast(p: argparse.ArgumentParser) -> None:
    """The failure policy's switch (benchmark/pipeline.run): with --fail-fast (or --debug, which shows the
    failing method's traceback) the first method that fails ends the run."""
    p.add_argument(
        "--fail-fast",
        action="store_true",
        help="stop at the first method that fails (default: the other methods still run)",
    )


def add_reuse_stale(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reuse-stale",
        action="store_true",
        help="take rows made by another git commit when everything else about them matches",
    )


def add_map_isolate(p: argparse.ArgumentParser) -> None:
    """--isolate for the commands that map a scene (bench map, bench craters run)."""
    p.add_argument(
        "--isolate",
        action="store_true",
        help="prepare and run each method in a bubblewrap sandbox (no network, no data, scene, labels, caches, "
        "results or home; every map from a fresh fork): for untrusted plugins (docs/adding-a-method.md)",
    )


def sandbox_available(args) -> None:
    """With --isolate: a one-line UserError, before any work, where bubblewrap is missing or cannot start."""
    if getattr(args, "isolate", False):
        from benchmark.sandbox import bwrap

        bwrap()


def refuse_fresh_with_reuse_stale(args) -> None:
    """--fresh and --reuse-stale (add_reuse_stale) ask opposite things of the rows a file holds: one line."""
    if args.fresh and args.reuse_stale:
        raise UserError(
            "--fresh and --reuse-stale exclude each other: --fresh recomputes the rows --reuse-stale would keep"
        )


def add_fixedk_files(p: argparse.ArgumentParser, help: str) -> None:
    """--fixedk CSV...: fixed-K results files (bench leaderboard and bench report show them beside Mars-Bench)."""
    p.add_argument("--fixedk", nargs="+", metavar="CSV", default=None, help=help)


def add_episode_shape(p: argparse.ArgumentParser, episodes: int, fewest: int) -> None:
    """--ways, --queries, --episodes and --seed: the shape and draw of an episode set (bench run, bench tune)."""
    settings = p.settings
    p.add_argument("--ways", type=positive_int("ways"), default=settings.n_way)
    p.add_argument("--queries", type=positive_int("queries"), default=settings.n_query)
    p.add_argument("--episodes", type=bounded_int("episodes", fewest, MAX_EPISODES), default=episodes)
    p.add_argument("--seed", type=bounded_int("seed", 0, SEED_MAX), default=settings.seed)


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=str(p.settings.data_dir),
        help="folder holding the datasets ($BENCH_DATA_DIR, else ./data)",
    )
    p.add_argument(
        "--cache-dir",
        default=str(p.settings.cache_dir),
        help="feature/checkpoint cache ($BENCH_CACHE_DIR, else ~/.cache/marsfsl)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")


# Each module in benchmark/commands/ defines add_parser(sub), which sets a `handler` default.
COMMAND_MODULES = [
    "run",
    "list",
    "leaderboard",
    "report",
    "data",
    "map",
    "craters",
    "perf",
    "fixedk",
    "migrate",
    "tune",
]
FAILED = 3  # the exit status of a run in which a method failed (bad input: 2, a bug: 1)


def build_parser(settings: Settings | None = None) -> Parser:
    """`bench`'s parser; its options' defaults are `settings` (default: the environment's)."""
    settings = settings if settings is not None else Settings.from_environment()
    parser = Parser(
        prog="bench", description="marsfsl: few-shot benchmark for Martian landform mapping", settings=settings
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    for name in COMMAND_MODULES:
        importlib.import_module(f"benchmark.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        settings = Settings.from_environment()  # once: every default below is one of its values
        args = build_parser(settings).parse_args(argv)
        resolve_backbone(args, settings)
        args.settings = settings.with_args(args)
        from benchmark.interrupts import recording_sigint
        from benchmark.session import session

        # a plugin's KeyboardInterrupt is its failure, the user's Ctrl-C stops the run; the run's cache folder
        # holds the digests of the dataset files it reads (a command that runs networks adds the thread policy)
        with recording_sigint(), session(args.settings, thread_policy=False):
            return args.handler(args)
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        from benchmark.scoring import MethodFailed

        return FAILED if isinstance(exc, MethodFailed) else 2
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
