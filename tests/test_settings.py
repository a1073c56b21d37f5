"""The run settings have one home (common/settings.py): every layer's defaults and every command's option
defaults are its values, --help shows them, and a run session applies the process-wide ones and restores them."""

import argparse
import ast
from pathlib import Path

import pytest
import torch

from benchmark.cli import build_parser, has_default, main
from benchmark.session import session
from common.settings import DEFAULTS, Settings
from tasks.datasets import content

ROOT = Path(__file__).resolve().parents[1]

# argparse dest -> the setting it defaults to (per command where the name means something else elsewhere)
SETTING_OF = {
    "task": "task",
    "shots": "shots",
    "ways": "n_way",
    "queries": "n_query",
    "episodes": "episodes",
    "seed": "seed",
    "method_seed": "seed",
    "backbone": "backbone",
    "image_size": "image_size",
    "device": "device",
    "split": "split",
    "data_dir": "data_dir",
    "cache_dir": "cache_dir",
    "threads": "threads",
    "ray_timeout": "ray_timeout",
    "memory_shots": "shots",
}
COMMAND_SETTING = {
    ("fixedk", "seeds"): "fixedk_seeds",
    ("tune", "shots"): "tune_shots",
    ("tune", "episodes"): "tune_episodes",
}
# a command's own default for an option named like a setting: it means something else there
OWN_DEFAULTS = {
    ("craters run", "shots"),
    ("craters scene", "shots"),
    ("data verify", "image_size"),
    ("migrate", "task"),
    ("migrate", "backbone"),
}  # facts an old file does not state, not settings
# left at None on the command line and decided later; their --help names the setting's value
DECIDED_LATER = {"image_size": "{image_size}", "ray_timeout": "{ray_timeout:g}", "threads": "all cores"}

OTHER = Settings(
    task="aid-classes",
    shots=(2, 3),
    n_way=3,
    n_query=7,
    episodes=9,
    seed=4,
    fixedk_seeds=(1, 2),
    tune_shots=6,
    tune_episodes=11,
    backbone="efficientnet_lite1",
    image_size=64,
    device="cpu",
    splits=("target", "validation"),
    data_dir=Path("/some/data"),
    cache_dir=Path("/some/cache"),
    threads=None,
    ray_timeout=5.0,
)


def subcommands(parser, prefix=()):
    """(name, parser) of every command, nested ones ("craters run") included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, (*prefix, name))
            return
    yield " ".join(prefix), parser


def shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def test_every_option_that_is_a_run_setting_defaults_to_the_settings_object_and_help_shows_it(monkeypatch):
    monkeypatch.setenv("COLUMNS", "2000")  # one help line per option: a wrapped default would not be found
    checked = 0
    for command, parser in subcommands(build_parser(OTHER)):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            name = COMMAND_SETTING.get((command, action.dest), SETTING_OF.get(action.dest))
            if name is None or not action.option_strings or (command, action.dest) in OWN_DEFAULTS:
                if action.option_strings and has_default(action):
                    assert f"(default: {shown(action.default)})" in text, (command, action.dest)
                continue
            value = getattr(OTHER, name)
            if action.default is None and name in DECIDED_LATER:
                assert DECIDED_LATER[name].format(**vars(OTHER)) in text, (command, action.dest)
            else:
                assert shown(action.default) == shown(value), (command, action.dest, action.default, value)
                assert f"(default: {shown(value)})" in text, (command, action.dest)
            checked += 1
    assert checked > 60


def literal(node) -> bool:
    """A value written out in the source (None aside: "decided later")."""
    if isinstance(node, ast.Constant):
        return node.value is not None
    if isinstance(node, (ast.List, ast.Tuple)):
        return all(literal(e) for e in node.elts)
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("Path", "list", "tuple", "range"):
        return all(literal(a) for a in node.args)
    if isinstance(node, ast.Lambda):
        return literal(node.body)
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "field":
        return any(literal(k.value) for k in node.keywords if k.arg in ("default", "default_factory"))
    return False


def test_no_second_literal_copy_of_a_default():
    """Module constants, the configs' and Context's fields and the options named like a setting take their
    defaults from common.settings (or a named constant of the command's own), never a copied literal."""
    settings = {f for f in vars(DEFAULTS)} | {"split", "seeds"}
    copies = []
    files = [
        *(ROOT / "benchmark" / "commands").glob("*.py"),
        *(
            ROOT / p
            for p in (
                "benchmark/cli.py",
                "benchmark/runner.py",
                "benchmark/fixedk.py",
                "benchmark/perf.py",
                "methods/base.py",
                "methods/backbones.py",
                "methods/features.py",
                "tasks/registry.py",
                "benchmark/tuning.py",
            )
        ),
    ]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and literal(node.value):
                copies += [
                    f"{path.name}: {t.id}"
                    for t in node.targets
                    if isinstance(t, ast.Name) and t.id in ("DEFAULT_BACKBONE", "DEFAULT_IMAGE_SIZE", "SPLITS")
                ]
            if isinstance(node, ast.ClassDef) and node.name in (
                "BenchConfig",
                "RunConfig",
                "FixedKConfig",
                "TuneConfig",
                "Context",
            ):
                copies += [
                    f"{path.name}: {node.name}.{s.target.id}"
                    for s in node.body
                    if isinstance(s, ast.AnnAssign)
                    and s.target.id in settings
                    and s.value is not None
                    and literal(s.value)
                ]
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args:
                dest = str(getattr(node.args[0], "value", "")).lstrip("-").replace("-", "_")
                copies += [
                    f"{path.name}: --{dest}"
                    for k in node.keywords
                    if k.arg == "default" and (dest in SETTING_OF or dest == "seeds") and literal(k.value)
                ]
    assert not copies


def test_the_layers_defaults_are_the_settings():
    from benchmark.fixedk import FixedKConfig
    from benchmark.runner import RunConfig
    from benchmark.tuning import TuneConfig
    from methods.backbones import DEFAULT_BACKBONE
    from methods.base import Context
    from methods.features import DEFAULT_IMAGE_SIZE
    from tasks.registry import SPLITS

    assert (DEFAULT_BACKBONE, DEFAULT_IMAGE_SIZE, SPLITS) == (DEFAULTS.backbone, DEFAULTS.image_size, DEFAULTS.splits)
    fields = Context.__dataclass_fields__
    assert (fields["backbone"].default, fields["image_size"].default, fields["seed"].default) == (
        DEFAULTS.backbone,
        DEFAULTS.image_size,
        DEFAULTS.seed,
    )
    config = RunConfig(methods=[])
    assert (
        config.task,
        tuple(config.shots),
        config.backbone,
        config.image_size,
        config.n_way,
        config.n_query,
        config.episodes,
        config.seed,
        config.split,
        config.data_dir,
        config.ray_timeout,
    ) == (
        DEFAULTS.task,
        DEFAULTS.shots,
        DEFAULTS.backbone,
        DEFAULTS.image_size,
        DEFAULTS.n_way,
        DEFAULTS.n_query,
        DEFAULTS.episodes,
        DEFAULTS.seed,
        DEFAULTS.split,
        DEFAULTS.data_dir,
        DEFAULTS.ray_timeout,
    )
    assert str(config.results_path()).startswith(str(DEFAULTS.runs))
    assert tuple(FixedKConfig(methods=[]).seeds) == DEFAULTS.fixedk_seeds
    tune = TuneConfig("protonet", [], "t", Path("d"))
    assert (tune.shots, tune.episodes, tune.n_way, tune.n_query, tune.seed) == (
        DEFAULTS.tune_shots,
        DEFAULTS.tune_episodes,
        DEFAULTS.n_way,
        DEFAULTS.n_query,
        DEFAULTS.seed,
    )
    with pytest.raises(AttributeError):  # frozen
        DEFAULTS.task = "other"


def test_settings_come_from_the_environment_and_then_the_flags(tmp_path):
    environ = {"BENCH_DATA_DIR": str(tmp_path / "d"), "BENCH_CACHE_DIR": str(tmp_path / "c")}
    settings = Settings.from_environment(environ)
    assert (settings.data_dir, settings.cache_dir) == (tmp_path / "d", tmp_path / "c")
    assert Settings.from_environment({}).data_dir == Path("data")
    assert Settings.from_environment({}).cache_dir == Path.home() / ".cache" / "marsfsl"
    args = build_parser(settings).parse_args(
        [*"run --method protonet --shots 2,1 --ways 3 --split validation --threads 2".split()]
    )
    assert (args.data_dir, args.cache_dir) == (str(tmp_path / "d"), str(tmp_path / "c"))
    given = settings.with_args(args)
    assert (given.shots, given.n_way, given.split, given.threads, given.data_dir) == (
        (1, 2),
        3,
        "validation",
        2,
        tmp_path / "d",
    )
    assert (given.n_query, given.task) == (DEFAULTS.n_query, DEFAULTS.task)  # not given: the default


def test_help_shows_the_environments_folders(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache-here"))
    monkeypatch.setenv("COLUMNS", "2000")
    with pytest.raises(SystemExit):
        main(["map", "--help"])
    assert f"(default: {tmp_path / 'cache-here'})" in capsys.readouterr().out


def test_a_cache_changes_no_process_state(tmp_path):
    from methods.cache import Cache

    before = content.digest_cache_folder()
    Cache(tmp_path / "one")
    Cache(tmp_path / "two")
    assert content.digest_cache_folder() == before


def process_state():
    from methods.features import inference_threads

    return content.digest_cache_folder(), inference_threads(), torch.get_num_threads()


def test_sessions_apply_the_settings_nest_and_restore(tmp_path, one_torch_thread):
    torch.set_num_threads(2)
    before = process_state()
    outer, inner = Settings(cache_dir=tmp_path / "outer", threads=3), Settings(cache_dir=tmp_path / "inner", threads=2)
    with session(outer):
        assert process_state() == (tmp_path / "outer" / "digests", 3, 1)
        with session(inner):
            assert process_state() == (tmp_path / "inner" / "digests", 2, 1)
        assert process_state() == (tmp_path / "outer" / "digests", 3, 1)
        with pytest.raises(RuntimeError), session(inner, thread_policy=False):
            assert process_state() == (tmp_path / "inner" / "digests", 3, 1)
            raise RuntimeError("a failing run")
        assert process_state() == (tmp_path / "outer" / "digests", 3, 1)
    assert process_state() == before


def test_a_session_without_threads_uses_every_core(tmp_path, one_torch_thread):
    from methods.features import inference_threads

    torch.set_num_threads(2)
    with session(Settings(cache_dir=tmp_path)):
        assert inference_threads() == 2 and torch.get_num_threads() == 1
