"""Method registry: `@register_method("name")` in-tree, entry points (group `marsfsl.methods`) out of tree."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib import metadata

from tasks.errors import UserError, closest

ENTRY_POINT_GROUP = "marsfsl.methods"


@dataclass(frozen=True)
class MethodInfo:
    name: str
    cls: type
    origin: str  # "marsfsl" or the distribution that provided it

    @property
    def description(self) -> str:
        if getattr(self.cls, "description", ""):
            return self.cls.description
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


_METHODS: dict[str, MethodInfo] = {}
_PLUGIN_ERRORS: dict[str, str] = {}
_plugins_loaded = False


def register_method(name: str, origin: str | None = None):
    """Class decorator: register a FewShotMethod subclass under `name`."""

    def wrap(cls):
        if name in _METHODS and _METHODS[name].cls is not cls:
            raise ValueError(f"method {name!r} is already registered by {_METHODS[name].origin}")
        module_root = cls.__module__.split(".")[0]
        _METHODS[name] = MethodInfo(name, cls, origin or ("marsfsl" if module_root == "methods" else module_root))
        cls.name = name
        return cls

    return wrap


def load_plugins() -> dict[str, str]:
    """Import every entry point of the group once; a failing plugin is recorded, not fatal."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        import methods  # noqa: F401  (built-ins first, so that a plugin cannot take their names)
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()  # may register itself with the decorator on import
                dist = ep.dist.name if ep.dist else ep.module
                taken = _METHODS.get(ep.name)
                if isinstance(obj, type) and taken is not None and taken.cls is not obj:
                    # never let a plugin silently replace another method: its rows would carry that name
                    raise ValueError(f"the name {ep.name!r} is already taken by {taken.origin}; rename the entry "
                                     f"point in {dist}")
                if isinstance(obj, type):
                    _METHODS[ep.name] = MethodInfo(ep.name, obj, f"plugin {dist}")
                    obj.name = ep.name
            except Exception as exc:  # a broken plugin must not take the suite down
                _PLUGIN_ERRORS[ep.name] = f"plugin {ep.name} ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
    return dict(_PLUGIN_ERRORS)


def _ensure_loaded() -> None:
    import methods  # noqa: F401  (registers built-ins)

    load_plugins()


def method_names() -> list[str]:
    _ensure_loaded()
    return sorted(_METHODS)


def builtin_method_names() -> list[str]:
    """The methods this package registers itself (not plugins)."""
    return [name for name in method_names() if _METHODS[name].origin == "marsfsl"]


def method_info(name: str) -> MethodInfo:
    _ensure_loaded()
    if name not in _METHODS:
        if name in _PLUGIN_ERRORS:
            raise UserError(_PLUGIN_ERRORS[name] + "; fix or uninstall that plugin")
        raise UserError(f"unknown method {name!r}{closest(name, _METHODS)}; run `bench list` to see all methods")
    return _METHODS[name]


def option_names(cls) -> list[str] | None:
    """The keyword options a method's constructor takes (None: it takes any)."""
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def create_method(name: str, **options):
    info = method_info(name)
    known = option_names(info.cls)
    for key in options:
        if known is not None and key not in known:
            raise UserError(f"unknown option {key!r} for method {name}{closest(key, known)}; its options: "
                            f"{', '.join(known) or 'none'}")
    try:
        method = info.cls(**options)
    except (TypeError, ValueError) as exc:
        given = ",".join(f"{k}={v}" for k, v in options.items())
        raise UserError(f"bad option for method {name} ({given}): {exc}") from None
    method._options = dict(options)
    return method
