"""One registry mechanism (common/registry.py) for methods, datasets and tasks."""

import sys
import types
from importlib import metadata

import pytest

from common import registry as registry_base
from common.errors import UserError
from common.registry import Registry


def test_register_lookup_and_a_one_line_did_you_mean():
    reg = Registry("widget")
    reg.register("alpha", 1)

    @reg.register("beta")
    def beta():
        return 2

    assert reg.lookup("alpha") == 1 and reg["beta"] is beta and list(reg) == ["alpha", "beta"]
    with pytest.raises(UserError) as error:
        reg.lookup("alpah")
    assert str(error.value) == "unknown widget 'alpah'; did you mean alpha?; known: alpha, beta"
    reg.register("alpha", 1)  # the same object again is no change
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha", 3)


def test_entry_points_register_after_the_builtins_and_a_broken_one_is_reported(monkeypatch):
    module = types.ModuleType("fake_widgets")
    module.GOOD, module.CLASH = "good", "clash"
    monkeypatch.setitem(sys.modules, "fake_widgets", module)
    points = [
        metadata.EntryPoint("good", "fake_widgets:GOOD", "widgets"),
        metadata.EntryPoint("alpha", "fake_widgets:CLASH", "widgets"),
        metadata.EntryPoint("broken", "fake_widgets_missing:X", "widgets"),
    ]
    monkeypatch.setattr(registry_base.metadata, "entry_points", lambda group: points if group == "widgets" else [])
    loaded = []
    reg = Registry("widget", "widgets", builtins=lambda: (loaded.append(1), reg.register("alpha", "builtin")))
    assert reg.names() == ["alpha", "good"] and loaded == [1]
    assert reg.lookup("alpha") == "builtin" and reg.entry("good").origin == "plugin fake_widgets"
    problems = reg.load_entry_points()
    assert "already taken by marsfsl" in problems["alpha"] and "failed to import" in problems["broken"]
    with pytest.raises(UserError, match="fix or uninstall that plugin"):
        reg.lookup("broken")


def test_methods_datasets_and_tasks_share_the_mechanism():
    from methods.registry import METHODS
    from tasks.datasets import DATASETS
    from tasks.registry import TASKS

    assert all(isinstance(r, Registry) for r in (METHODS, DATASETS, TASKS))
    assert "protonet" in METHODS and "hirise-v1" in DATASETS and "hirise-regions" in TASKS
    for reg, wrong in ((METHODS, "protonett"), (DATASETS, "hirise-v2"), (TASKS, "hirise-region")):
        with pytest.raises(UserError, match=f"unknown {reg.kind} '{wrong}'; did you mean"):
            reg.lookup(wrong)
