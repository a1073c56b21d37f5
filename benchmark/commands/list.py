"""`bench list`: methods (with where each comes from), tasks and datasets."""

from __future__ import annotations

from benchmark.cli import add_common


def add_parser(sub) -> None:
    lst = sub.add_parser("list", help="methods, tasks and datasets")
    add_common(lst)
    lst.set_defaults(handler=cmd_list)


def cmd_list(args) -> int:
    from rich.table import Table

    from benchmark.console import stdout
    from methods.registry import load_plugins, method_info, method_names
    from tasks.datasets import dataset_names, dataset_spec
    from tasks.registry import TASKS

    table = Table(
        title="methods",
        caption="transductive: reads the unlabelled features of its episode's whole "
        "query set (bench leaderboard marks it; --inductive-only leaves it out)",
    )
    for col in ("name", "consumes", "query", "from", "description"):
        table.add_column(col)
    for name in method_names():
        info = method_info(name)
        query = "transductive" if getattr(info.cls, "transductive", False) else "inductive"
        table.add_row(name, info.cls.consumes, query, info.origin, info.description)
    stdout.print(table)
    for problem in load_plugins().values():
        stdout.print(f"[red]broken plugin[/red] {problem}", highlight=False)
    table = Table(title="tasks")
    table.add_column("name")
    table.add_column("description")
    for name, (description, _) in TASKS.items():
        table.add_row(name, description)
    table.add_row("folder:PATH / csv:PATH", "your own labelled images (scene-disjoint 60/40 split)")
    table.add_row("marsbench:PATH", "a set in Mars-Bench's layout (annotation.csv, data/<split>/<class>/)")
    stdout.print(table)
    table = Table(title="datasets")
    for col in ("name", "folder", "description"):
        table.add_column(col)
    for name in dataset_names():
        spec = dataset_spec(name)
        table.add_row(name, spec.folder, spec.description)
    stdout.print(table)
    from methods.devices import available_devices, resolve_device

    table = Table(title=f"devices (--device auto picks {resolve_device('auto')}; rows record the device type)")
    for col in ("device", "what"):
        table.add_column(col)
    for name, what in available_devices():
        table.add_row(name, what)
    stdout.print(table)
    return 0
