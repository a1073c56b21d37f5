"""One registry mechanism for methods, datasets and tasks (as timm and lm-eval-harness have one).

A `Registry` maps names to objects: `@registry.register("name")` (or `registry.register("name", obj)`) adds
one, `registry.lookup(name)` finds one or fails with a one-line UserError that suggests close names, and
`registry.load_entry_points()` adds what installed distributions declare under the registry's entry-point
group (`marsfsl.methods`, `marsfsl.datasets`, `marsfsl.tasks`). A name is taken once: a second registration
of another object under it is an error, so that no row, cache entry or manifest can carry a name that means
two things. Entry points load after the built-ins; one that fails to import is recorded, not fatal.

It lives in common/, the floor under every layer, so that each of them may use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any

from common.errors import UserError, closest

BUILTIN = "marsfsl"


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    origin: str  # "marsfsl" or "plugin <distribution>"


class Registry(Mapping):
    """Name -> object, read like a dict (`registry[name]`, `in`, `items()`); see the module docstring."""

    def __init__(
        self,
        kind: str,
        entry_point_group: str | None = None,
        hint: Callable[[Registry], str] | None = None,
        builtins: Callable[[], None] | None = None,
    ):
        self.kind = kind  # "method", "dataset", "task": used in messages
        self.entry_point_group = entry_point_group
        self._hint = hint or (lambda reg: f"known: {', '.join(reg.names())}")
        self._builtins = builtins  # imports the modules that register the built-ins, on first use
        self._entries: dict[str, Entry] = {}
        self._errors: dict[str, str] = {}
        self._loaded = False

    def register(self, name: str, obj: Any = None, origin: str = BUILTIN):
        """`registry.register(name, obj)`, or `@registry.register(name)` as a decorator; returns obj."""
        if obj is None:
            return lambda target: self.register(name, target, origin)
        taken = self._entries.get(name)
        if taken is not None and taken.obj is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered by {taken.origin}")
        self._entries[name] = Entry(name, obj, origin)
        return obj

    def load_entry_points(self) -> dict[str, str]:
        """Register the entry points of the group once; returns {name: problem} of those that failed."""
        self._ensure_builtins()
        if self._loaded or not self.entry_point_group:
            self._loaded = True
            return dict(self._errors)
        self._loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            dist = ep.dist.name if ep.dist else ep.module
            try:
                obj = ep.load()  # may register itself with the decorator on import
                if isinstance(obj, ModuleType):  # a module that registered what it holds when imported
                    continue
                taken = self._entries.get(ep.name)
                if taken is not None and taken.obj is not obj:
                    # never let a plugin silently replace another entry: its rows would carry that name
                    raise ValueError(
                        f"the name {ep.name!r} is already taken by {taken.origin}; rename the entry point in {dist}"
                    )
                self.register(ep.name, obj, f"plugin {dist}")
            except Exception as exc:  # a broken plugin must not take the suite down
                self._errors[ep.name] = f"plugin {ep.name} ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
        return dict(self._errors)

    def _ensure_builtins(self) -> None:
        if self._builtins is not None:
            builtins, self._builtins = self._builtins, None
            builtins()

    def _all(self) -> dict[str, Entry]:
        self.load_entry_points()
        return self._entries

    def entry(self, name: str) -> Entry:
        """The entry for `name`, or a one-line UserError: a broken plugin's import error, or close names."""
        entries = self._all()
        if name not in entries:
            if name in self._errors:
                raise UserError(self._errors[name] + "; fix or uninstall that plugin")
            raise UserError(f"unknown {self.kind} {name!r}{closest(name, entries)}; {self._hint(self)}")
        return entries[name]

    def lookup(self, name: str) -> Any:
        return self.entry(name).obj

    def names(self) -> list[str]:
        return sorted(self._all())

    def __getitem__(self, name: str) -> Any:
        return self._all()[name].obj

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())
