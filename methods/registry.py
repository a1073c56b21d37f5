"""Method registry: `@register_method("name")` in-tree, entry points (group `marsfsl.methods`) out of tree.

`create_method(name, **options)` checks each option against the constructor's default (or annotation):
bools take true/false/1/0/yes/no, ints only integers, floats only finite numbers; the method is built with
the converted values and those, with the defaults filled in, are its recorded config (10 and 10.0 are one
setting of a float option), which keys its result rows.
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
import weakref
from dataclasses import dataclass

from common.errors import UserError, closest
from common.registry import BUILTIN, Registry

ENTRY_POINT_GROUP = "marsfsl.methods"


def _import_builtins() -> None:
    import methods  # noqa: F401  (registers the built-ins first, so that a plugin cannot take their names)


METHODS = Registry(
    "method", ENTRY_POINT_GROUP, hint=lambda reg: "run `bench list` to see all methods", builtins=_import_builtins
)


@dataclass(frozen=True)
class MethodInfo:
    name: str
    cls: type
    origin: str  # "marsfsl" or "plugin <distribution>"

    @property
    def description(self) -> str:
        if getattr(self.cls, "description", ""):
            return self.cls.description
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


def register_method(name: str):
    """Class decorator: register a FewShotMethod subclass under `name`."""

    def wrap(cls):
        module_root = cls.__module__.split(".")[0]
        METHODS.register(name, cls, BUILTIN if module_root == "methods" else module_root)
        cls.name = name
        return cls

    return wrap


def load_plugins() -> dict[str, str]:
    """Import every entry point of the group once; returns {name: problem} of those that failed to import."""
    errors = METHODS.load_entry_points()
    for name in METHODS:
        entry = METHODS.entry(name)
        if entry.origin != BUILTIN and isinstance(entry.obj, type):
            entry.obj.name = name  # a plugin's rows carry the name it is registered under
    return errors


def method_names() -> list[str]:
    load_plugins()
    return METHODS.names()


def builtin_method_names() -> list[str]:
    """The methods this package registers itself (not plugins)."""
    return [name for name in method_names() if METHODS.entry(name).origin == BUILTIN]


def method_info(name: str) -> MethodInfo:
    load_plugins()
    entry = METHODS.entry(name)
    return MethodInfo(entry.name, entry.obj, entry.origin)


def option_defaults(cls) -> dict | None:
    """{option: default (inspect.Parameter.empty where it has none)} of a method's constructor, plus the
    class's `option_defaults` for options it takes as **kwargs; None: it takes any keyword."""
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return None
    named = {
        p.name: p.default for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    if any(p.kind is p.VAR_KEYWORD for p in params):
        extra = getattr(cls, "option_defaults", None)
        return None if extra is None else {**named, **extra}
    return named


def option_names(cls) -> list[str] | None:
    """The keyword options a method's constructor takes (None: it takes any)."""
    defaults = option_defaults(cls)
    return None if defaults is None else list(defaults)


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
_KINDS = {"bool": bool, "int": int, "float": float, "str": str}


def expected_type(cls, option: str, default) -> type | None:
    """bool, int, float or str from the option's default, else from its annotation; None: any value."""
    if isinstance(default, (bool, int, float, str)):
        return type(default)
    try:
        annotation = inspect.signature(cls.__init__).parameters[option].annotation
    except (TypeError, ValueError, KeyError):
        return None
    if isinstance(annotation, str):
        annotation = _KINDS.get(annotation.strip())
    return annotation if annotation in (bool, int, float, str) else None


def convert_option(method: str, option: str, value, kind: type | None):
    """`value` (as MethodSpec.parse read it: bool, int, float or str) as `kind`, or a one-line UserError."""
    if kind is None:
        return value
    wanted = {bool: "true or false (or 1/0, yes/no)", int: "an integer", float: "a finite number", str: "a text"}[kind]
    converted = None
    if kind is bool:
        text = str(value).strip().lower() if not isinstance(value, float) else ""
        converted = True if text in _TRUE else False if text in _FALSE else None
    elif kind is int:
        converted = value if isinstance(value, int) and not isinstance(value, bool) else None
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            converted = float(value)
    elif not isinstance(value, bool):  # a text option: whatever was written, as text
        converted = str(value)
    if converted is None:
        raise UserError(f"bad option for method {method} ({option}={value}): {option} must be {wanted}")
    return converted


# id(method) -> its recorded config. Only ids: a method must not reach the other methods of a run through this
# module (it could change their options before they run). The entry goes when its method is freed, before
# the id can be reused.
_CONFIGS: dict[int, dict] = {}


def _remember(method, config: dict) -> None:
    try:
        weakref.finalize(method, _CONFIGS.pop, id(method), None)
    except TypeError:  # not weak-referenceable: no entry, so that no other object can inherit its id's config
        return
    _CONFIGS[id(method)] = config


def recorded_config(method) -> dict:
    """The config create_method recorded for `method`; for one built directly, its constructor defaults."""
    held = _CONFIGS.get(id(method))
    if held is not None:
        return dict(held)
    defaults = option_defaults(type(method)) or {}
    return {k: v for k, v in defaults.items() if v is not inspect.Parameter.empty}


def create_method(name: str, **options):
    info = method_info(name)
    defaults = option_defaults(info.cls)
    if defaults is not None:
        for key in options:
            if key not in defaults:
                raise UserError(
                    f"unknown option {key!r} for method {name}{closest(key, defaults)}; its options: "
                    f"{', '.join(defaults) or 'none'}"
                )
        options = {
            key: convert_option(name, key, value, expected_type(info.cls, key, defaults[key]))
            for key, value in options.items()
        }
    given = ",".join(f"{k}={v}" for k, v in options.items())
    try:
        method = info.cls(**options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad option for method {name} ({given}): {exc}") from None
    except UserError:
        raise
    except (Exception, SystemExit) as exc:  # the plugin's own code: named, and it must not end the run
        raise UserError(
            f"method {name} failed when built{f' ({given})' if given else ''}: {type(exc).__name__}"
            f"{f': {exc}' if str(exc) else ''}; fix or uninstall that method"
        ) from None
    config = {k: v for k, v in (defaults or {}).items() if v is not inspect.Parameter.empty}
    _remember(method, {**config, **options})
    return method


VERSION_MAX = 2**31 - 1  # results files check method_version as such an integer


def method_version(method) -> int:
    """The class's `version` (results rows key on it), or a one-line UserError naming the method when it is not
    an integer from 0 to VERSION_MAX (a text or a float would key rows that no later run can match)."""
    version = getattr(type(method), "version", 1)
    if isinstance(version, numbers.Integral) and not isinstance(version, bool) and 0 <= version <= VERSION_MAX:
        return int(version)
    raise UserError(
        f"method {_name(method)}: its version is {version!r}, not an integer from 0 to {VERSION_MAX}; "
        "set the class attribute `version` to one (e.g. version = 2), or uninstall that method"
    )


def config_text(method) -> str:
    """`method.config()` as the JSON text its results rows key on (keys sorted), or a one-line UserError naming
    the method when config() fails or returns something JSON cannot hold exactly."""
    name = _name(method)
    try:
        config = method.config()
    except (Exception, SystemExit) as exc:
        raise UserError(
            f"method {name}: config() failed ({type(exc).__name__}: {exc}); fix or uninstall that method"
        ) from None
    if not isinstance(config, dict):
        raise UserError(f"method {name}: config() returned a {type(config).__name__}, not a dict of its options")
    try:
        return json.dumps(config, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"method {name}: config() returned {_short(config)}, which is not JSON ({exc}); its values "
            "must be numbers (finite), text, true/false, null, or lists and dicts of these"
        ) from None


def _name(method) -> str:
    return getattr(method, "name", "") or type(method).__name__


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
